"""`speechq batch asr|tts` against a real worker: bad files fail alone, reruns resume."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from tests.workers.conftest import REPO, speechq_command, write_noise_wav

pytestmark = pytest.mark.slow


def _run(service, *args, timeout=300):
    return subprocess.run(speechq_command() + list(args), cwd=REPO, env=service.worker.env,
                          capture_output=True, text=True, timeout=timeout)


def _lines(path):
    """The output file's records. One line may be torn: cut by the test's SIGKILL, or read
    while it is being written; `speechq batch` skips such a line too (workers.batch.recorded)."""
    records, torn = [], 0
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            torn += 1
    assert torn <= 1, f"{torn} torn lines in {path}"
    return records


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recordings")
    for i in range(200):
        write_noise_wav(folder / f"speaker{i % 4}" / f"{i:03d}.wav", 0.3, seed=i)
    (folder / "speaker0" / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk")
    return folder


def test_a_folder_with_a_corrupt_file_and_a_resumed_rerun(service, recordings, tmp_path):
    out = tmp_path / "results.jsonl"
    cmd = speechq_command() + ["batch", "asr", str(recordings), "-o", str(out), "--max-in-flight", "4"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=service.worker.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(_lines(out)) < 50 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # halfway, as a crash would
    proc.wait(10)
    first = _lines(out)
    assert 50 <= len(first) < 201

    rerun = _run(service, "batch", "asr", str(recordings), "-o", str(out), "--no-progress")
    assert rerun.returncode == 1, rerun.stderr  # one input failed
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert summary["skipped"] == len(first) and summary["total"] == 201
    lines = _lines(out)
    keys = [x["key"] for x in lines]
    assert len(keys) == len(set(keys)) == 201  # nothing done twice
    states = [x["state"] for x in lines]
    assert states.count("succeeded") == 200 and states.count("failed") == 1
    (bad,) = [x for x in lines if x["state"] == "failed"]
    assert bad["audio"].endswith("corrupt.wav") and "corrupt.wav" in bad["error"]
    good = next(x for x in lines if x["state"] == "succeeded")
    assert {"audio", "text", "words", "id"} <= set(good)
    jobs = service.client.get_many([x["id"] for x in lines])
    assert all(j.completions == 1 for j in jobs if j is not None and j.state == "succeeded")

    again = _run(service, "batch", "asr", str(recordings), "-o", str(out), "--no-progress")
    assert json.loads(again.stdout.strip().splitlines()[-1])["skipped"] == 201
    assert len(_lines(out)) == 201


def test_subtitles_beside_the_inputs(service, tmp_path):
    clips = [write_noise_wav(tmp_path / "in" / f"{i}.wav", 1.0, seed=i) for i in range(2)]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"audio": f"in/{c.name}"}) + "\n" for c in clips))
    out = _run(service, "batch", "asr", str(manifest), "-o", str(tmp_path / "r.jsonl"), "--format", "srt,vtt",
               "--no-progress")
    assert out.returncode == 0, out.stderr
    for c in clips:
        assert c.with_suffix(".vtt").read_text().startswith("WEBVTT")
        assert c.with_suffix(".srt").exists()


def test_batch_tts_writes_one_wav_per_line(service, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("The first line.\n\nThe second line.\n" + "x" * 3000 + "\n")
    out_dir = tmp_path / "wavs"
    out = _run(service, "batch", "tts", str(lines), "--out-dir", str(out_dir), "--no-progress")
    assert out.returncode == 1  # the over-long line failed
    records = {r["line"]: r for r in _lines(out_dir / "results.jsonl")}
    assert set(records) == {1, 3, 4}
    assert records[1]["state"] == records[3]["state"] == "succeeded"
    assert (out_dir / "000001.wav").is_file() and (out_dir / "000003.wav").is_file()
    assert records[4]["state"] == "failed" and "limit is 2000" in records[4]["error"]
