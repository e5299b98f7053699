"""Whole collections through the queue: `speechq batch asr` and `speechq batch tts`.

At most `max_in_flight` jobs are queued at once, so a million files never flood Redis. Each
input ends as one JSONL line, appended as its job ends; a bad input is a `failed` line. A job's
id is derived from its input, so a rerun with the same output file skips what is recorded and
resubmits the rest under the same ids: jobs still running from the interrupted run are picked
up, not started twice. The derivation is keyed by a secret of the user's (`batch_secret`), so
nobody else can predict the ids from the file names.
"""

from __future__ import annotations

import glob
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pipeline.inference.formats import render
from workers.storage import StorageError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus", ".aiff", ".aif")
DONE = ("succeeded", "failed", "cancelled")


@dataclass
class Item:
    key: str  # what the output line names the input by (audio path, or line number)
    request: dict  # the job's request; for ASR `audio` is a local path the client copies in
    extra: dict = field(default_factory=dict)  # copied into the output line

    def job_id(self, kind: str, secret: bytes) -> str:
        """Stable across runs: the same input (same file content stamp) gets the same id."""
        stamp = json.dumps([kind, self.key, self.request, _file_stamp(self.request.get("audio"))],
                           sort_keys=True)
        return f"batch-{kind}-{hmac.new(secret, stamp.encode(), hashlib.sha256).hexdigest()[:32]}"


def batch_secret(environ=None) -> bytes:
    """The user's key for batch job ids, made on first use beside the default storage
    ($XDG_DATA_HOME/speechq/batch.key, readable by the user alone)."""
    from workers.settings import default_storage

    path = default_storage(environ).parent / "batch.key"
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


def _file_stamp(path) -> list | None:
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


# ------------------------------------------------------------------ inputs


def audio_inputs(source: str) -> list[Path]:
    """A folder (searched recursively), a glob pattern, or a JSONL manifest with "audio" paths."""
    path = Path(source)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if path.is_file() and path.suffix == ".jsonl":
        out = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                record = json.loads(line)
                if "audio" not in record:
                    raise ValueError(f"{path}:{n}: no \"audio\" field")
                audio = Path(record["audio"])
                out.append(audio if audio.is_absolute() else path.parent / audio)
        return out
    if path.is_file():
        return [path]
    matches = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
    if not matches:
        raise ValueError(f"{source}: no such folder, manifest or file, and no file matches it as a glob")
    return matches


def asr_items(paths: Iterable[Path], **options) -> list[Item]:
    """`options`: RecognitionOptions fields; those left out or None are the worker's defaults."""
    chosen = {k: v for k, v in options.items() if v is not None}
    return [Item(str(p), {"audio": str(p), "options": chosen}) for p in paths]


def tts_items(lines_file: Path, **options) -> list[Item]:
    """`options`: TTSOptions fields, as for asr_items."""
    chosen = {k: v for k, v in options.items() if v is not None}
    items = []
    for n, line in enumerate(lines_file.read_text().splitlines(), 1):
        if line.strip():
            items.append(Item(f"{n:06d}", {"text": line.strip(), "options": chosen}, {"line": n}))
    return items


# ------------------------------------------------------------------ the output file


def recorded(out: Path, retry_failed: bool = False) -> dict[str, dict]:
    """Inputs the output file already has an ending for (a torn last line is ignored)."""
    done = {}
    if not out.exists():
        return done
    for line in out.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("state") == "succeeded" or (record.get("state") in DONE and not retry_failed):
            done[record["key"]] = record
    return done


class JsonlWriter:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        torn = path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n")
        self.f = path.open("a")
        if torn:
            self.f.write("\n")  # a crash mid-line: start afresh on the next line

    def write(self, record: dict) -> None:
        self.f.write(json.dumps(record) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


# ------------------------------------------------------------------ running


@dataclass
class BatchReport:
    total: int
    skipped: int = 0
    succeeded: int = 0
    failed: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"total": self.total, "skipped": self.skipped, "succeeded": self.succeeded,
                "failed": self.failed, "seconds": round(self.seconds, 3)}


def run_batch(client, kind: str, items: list[Item], out: Path,
              on_done: Callable[[Item, dict], dict] | None = None, max_in_flight: int = 64,
              retry_failed: bool = False, progress: bool = True, poll: float = 0.05) -> BatchReport:
    """Run every item not yet recorded in `out` through the queue; append one line per item.

    `on_done(item, line)` may add to a finished item's line (and write files beside it).
    """
    from tqdm import tqdm

    done = recorded(out, retry_failed)
    secret = batch_secret()
    todo = [it for it in items if it.key not in done]
    report = BatchReport(len(items), skipped=len(items) - len(todo))
    report.failed = sum(1 for it in items if done.get(it.key, {}).get("state") in ("failed", "cancelled"))
    writer = JsonlWriter(out)
    bar = tqdm(total=len(items), initial=report.skipped, unit="job", disable=not progress,
               dynamic_ncols=True, smoothing=0.1)
    start = time.perf_counter()
    in_flight: dict[str, Item] = {}
    pending: Iterator[Item] = iter(todo)
    exhausted = False
    try:
        while in_flight or not exhausted:
            while not exhausted and len(in_flight) < max_in_flight:
                item = next(pending, None)
                if item is None:
                    exhausted = True
                    break
                job_id, error = _submit(client, kind, item, secret)
                if error:
                    _record(writer, report, bar, item, {"id": job_id, "state": "failed", "error": error}, on_done)
                else:
                    in_flight[job_id] = item
            if not in_flight:
                continue
            ended = [j for j in client.get_many(list(in_flight)) if j is not None and j.done]
            for job in ended:
                item = in_flight.pop(job.id)
                _record(writer, report, bar, item, {"id": job.id, "state": job.state,
                                                    **(job.result or {}), "error": job.error}, on_done)
            if not ended:
                time.sleep(poll)
    finally:
        writer.close()
        bar.close()
        report.seconds = time.perf_counter() - start
    return report


def _submit(client, kind: str, item: Item, secret: bytes) -> tuple[str, str | None]:
    job_id = item.job_id(kind, secret)
    try:
        if kind == "asr":
            client.submit_asr(item.request["audio"], job_id=job_id, **item.request["options"])
        else:
            client.submit_tts(item.request["text"], job_id=job_id, **item.request["options"])
    except (ValueError, OSError) as e:  # the file vanished, or is unreadable
        return job_id, str(e)
    return job_id, None


def _record(writer, report, bar, item: Item, outcome: dict, on_done) -> None:
    line = {"key": item.key, **item.extra, **outcome}
    if item.request.get("audio"):
        line["audio"] = item.request["audio"]
    if on_done is not None and line["state"] == "succeeded":
        try:
            line = on_done(item, line)
        except (OSError, StorageError) as e:
            line.update(state="failed", error=f"could not write the output: {e}")
    writer.write(line)
    if line["state"] == "succeeded":
        report.succeeded += 1
    else:
        report.failed += 1
    bar.update(1)


def write_subtitles(formats: list[str]) -> Callable[[Item, dict], dict]:
    """on_done for ASR: a .srt/.vtt/.txt beside each input audio file."""
    def on_done(item: Item, line: dict) -> dict:
        for fmt in formats:
            dst = Path(item.request["audio"]).with_suffix(f".{fmt}")
            dst.write_text(render(line, fmt))
            line.setdefault("files", []).append(str(dst))
        return line
    return on_done


def copy_wavs(client, out_dir: Path) -> Callable[[Item, dict], dict]:
    """on_done for TTS: fetch each output from the storage as <out_dir>/<line>.<its format's
    suffix> (.wav unless --format says otherwise)."""
    def on_done(item: Item, line: dict) -> dict:
        dst = client.storage.copy_out(line["audio_ref"], out_dir / f"{item.key}{PurePosixPath(line['audio_ref']).suffix}")
        line["audio"] = str(dst)
        return line
    return on_done
