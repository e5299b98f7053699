"""Does `speechq batch asr` keep the workers busy? Audio seconds per second through the queue
against the same files transcribed in one process without a queue.

    .venv/bin/python bench/batch.py --json
    .venv/bin/python bench/batch.py --json --recognizer pipeline.inference.recognizer:Recognizer --checkpoints checkpoints

Both sides use the same model class, device, torch threads and batch size. Reported: each
side's audio seconds per second, their ratio (target >= 0.9), and the worker's utilisation
(busy seconds / wall seconds, from its own counters). Redis db 14 is flushed. The last line is
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO)] + [x for x in sys.path if Path(x or ".").resolve() != Path(__file__).parent]

from tests.workers.conftest import (  # noqa: E402  (the test helpers build the tiny models)
    STUB_RECOGNIZER,
    WorkerProcess,
    flush,
    service_environment,
    speechq_command,
    write_noise_wav,
)


def direct(files: list[Path], recognizer: str, device: str, threads: int, batch_size: int) -> dict:
    """The same files in this process: load, batch, transcribe."""
    import torch

    from pipeline.frontend.audio import load_audio
    from workers.engines import load_class

    torch.set_num_threads(threads)
    model = load_class(recognizer).load(device=device)
    model.transcribe_batch([load_audio(files[0], model.sample_rate)])  # warm up
    t = time.perf_counter()
    audio = 0.0
    for i in range(0, len(files), batch_size):
        wavs = [load_audio(f, model.sample_rate) for f in files[i: i + batch_size]]
        model.transcribe_batch(wavs)
        audio += sum(w.numel() for w in wavs) / model.sample_rate
    seconds = time.perf_counter() - t
    return {"seconds": round(seconds, 3), "audio_seconds_per_second": round(audio / seconds, 2)}


def queued(env: dict, root: Path, folder: Path, files: list[Path]) -> dict:
    from workers import monitoring
    from workers.jobs import connect

    worker = WorkerProcess(env, root / "worker.log", "asr").wait_ready()
    try:
        subprocess.run(speechq_command() + ["submit", "asr", str(files[0]), "--wait", "--json"], cwd=REPO,
                       env=worker.env, check=True, capture_output=True, timeout=300)  # warm up
        r = connect(env["SPEECHQ_REDIS_URL"])
        busy0 = float(r.hget(monitoring.worker_key(worker.name), "busy_seconds") or 0)
        t = time.perf_counter()
        out = subprocess.run(speechq_command() + ["batch", "asr", str(folder), "-o", str(root / "out.jsonl"),
                                                  "--no-progress"],
                             cwd=REPO, env=worker.env, capture_output=True, text=True, timeout=1800)
        seconds = time.perf_counter() - t
        busy = float(r.hget(monitoring.worker_key(worker.name), "busy_seconds") or 0) - busy0
    finally:
        worker.terminate()
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    lines = [json.loads(x) for x in (root / "out.jsonl").read_text().splitlines()]
    audio = sum(x.get("audio_duration", 0) for x in lines if x["state"] == "succeeded")
    return {**summary, "seconds": round(seconds, 3), "audio_seconds_per_second": round(audio / seconds, 2),
            "worker_utilisation": round(busy / seconds, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--files", type=int, default=300)
    p.add_argument("--seconds", type=float, default=2.0, help="length of each clip")
    p.add_argument("--device", default="cpu")
    p.add_argument("--recognizer", default=STUB_RECOGNIZER)
    p.add_argument("--checkpoints", default=None, help="folder with asr.pt for the real recognizer "
                   "(both sides load it; default: a folder with a tiny random TTS model only)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    a = p.parse_args()

    root = Path(tempfile.mkdtemp(prefix="speechq-bench-batch-"))
    folder = root / "clips"
    files = [write_noise_wav(folder / f"{i:05d}.wav", a.seconds, seed=i) for i in range(a.files)]
    extra = {"checkpoints": Path(a.checkpoints).resolve()} if a.checkpoints else {}
    env = service_environment(root, redis_url=a.redis_url, recognizer=a.recognizer, threads=a.threads,
                              device=a.device, max_batch_size=a.batch_size, batch_wait_ms=5, test_hooks=0,
                              **extra)
    os.environ["SPEECHQ_CHECKPOINTS"] = env["SPEECHQ_CHECKPOINTS"]  # the direct side loads the same model
    report = {"machine": platform.node(), "cpus": os.cpu_count(), "device": a.device, "recognizer": a.recognizer,
              "files": a.files, "clip_seconds": a.seconds, "date": time.strftime("%Y-%m-%d")}
    report["direct"] = direct(files, a.recognizer, a.device, a.threads, a.batch_size)
    flush(a.redis_url)
    report["batch_command"] = queued(env, root, folder, files)
    flush(a.redis_url)
    report["ratio"] = round(report["batch_command"]["audio_seconds_per_second"]
                            / report["direct"]["audio_seconds_per_second"], 3)
    if not a.json:
        for k, v in report.items():
            print(f"{k}: {v}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
