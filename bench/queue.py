"""Queue benchmarks: what the service adds to a job, and what dynamic batching buys.

    .venv/bin/python bench/queue.py --json
    .venv/bin/python bench/queue.py --json --device cuda:0 --recognizer pipeline.inference.recognizer:Recognizer

1. overhead: a trivial TTS job (a tiny model, two words) submitted through Redis and a real
   worker, submit-to-result p50/p95, against the same call made directly in-process;
2. throughput: N short ASR jobs (1 s clips) through one worker with dynamic batching, against
   the same worker with batch size 1.

Uses Redis db 14 (flushed) and, unless --checkpoints is given, a tiny random TTS checkpoint; the
ASR model is the test stub unless --recognizer names another. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# this file's folder must not stay on the path: its name would shadow the standard `queue`
sys.path[:] = [str(REPO)] + [x for x in sys.path if Path(x or ".").resolve() != Path(__file__).parent]

from tests.workers.conftest import (  # noqa: E402  (the test helpers build the tiny models)
    STUB_RECOGNIZER,
    WorkerProcess,
    flush,
    service_environment,
    settings_for,
    write_noise_wav,
)


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def _summary(values: list[float]) -> dict:
    return {"n": len(values), "p50_ms": round(1000 * _pct(values, 0.5), 2),
            "p95_ms": round(1000 * _pct(values, 0.95), 2), "mean_ms": round(1000 * statistics.mean(values), 2)}


def overhead(env: dict, client, n: int, threads: int) -> dict:
    import torch

    from workers.settings import Settings

    torch.set_num_threads(threads)  # as in the worker, for a fair comparison
    os.environ.update(env)
    from pipeline.inference.synthesizer import Synthesizer

    synth = Synthesizer.load(device=Settings.from_env(env).device)
    text = "Hello there."
    synth.synthesize(text)  # warm up, as the worker is
    direct = []
    for _ in range(n):
        t = time.perf_counter()
        synth.synthesize(text)
        direct.append(time.perf_counter() - t)
    queued = []
    for _ in range(n):
        t = time.perf_counter()
        job = client.wait(client.submit_tts(text).id, 60)
        queued.append(time.perf_counter() - t)
        assert job.state == "succeeded", job.error
    d, q = _summary(direct), _summary(queued)
    return {"direct": d, "queue": q,
            "overhead_p50_ms": round(q["p50_ms"] - d["p50_ms"], 2),
            "overhead_p95_ms": round(q["p95_ms"] - d["p95_ms"], 2)}


def throughput(env: dict, client, files: list[Path]) -> dict:
    t = time.perf_counter()
    ids = [client.submit_asr(f).id for f in files]
    jobs = [client.wait(i, 600) for i in ids]
    seconds = time.perf_counter() - t
    failed = [j.error for j in jobs if j.state != "succeeded"]
    assert not failed, failed[:3]
    sizes = [j.batch_size for j in jobs]
    audio = sum(j.result["audio_duration"] for j in jobs)
    return {"jobs": len(jobs), "seconds": round(seconds, 3), "jobs_per_second": round(len(jobs) / seconds, 2),
            "audio_seconds_per_second": round(audio / seconds, 2),
            "mean_batch_size": round(statistics.mean(sizes), 2), "max_batch_size": max(sizes)}


def _run_worker(env: dict, root: Path, name: str, queues: str, args: tuple = ()):
    worker = WorkerProcess(env, root / f"{name}.log", queues, args).wait_ready()
    return worker


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    p.add_argument("--checkpoints", default=None, help="folder with tts-nat.pt (default: a tiny random one)")
    p.add_argument("--recognizer", default=STUB_RECOGNIZER)
    p.add_argument("--overhead-jobs", type=int, default=40)
    p.add_argument("--asr-jobs", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()

    from workers.client import Client

    root = Path(tempfile.mkdtemp(prefix="speechq-bench-"))
    overrides = {"recognizer": a.recognizer, "threads": a.threads, "device": a.device, "test_hooks": 0,
                 "batch_wait_ms": 5}
    env = service_environment(root, redis_url=a.redis_url, **overrides)
    if a.checkpoints:
        env["SPEECHQ_CHECKPOINTS"] = a.checkpoints
    client = Client(settings_for(env))
    files = [write_noise_wav(root / "clips" / f"{i:04d}.wav", 1.0, seed=i) for i in range(a.asr_jobs)]
    report = {"machine": platform.node(), "cpus": os.cpu_count(), "device": a.device,
              "recognizer": a.recognizer, "date": time.strftime("%Y-%m-%d")}

    flush(a.redis_url)
    worker = _run_worker(env, root, "overhead", "tts")
    try:
        client.wait(client.submit_tts("Warm up.").id, 120)
        report["overhead"] = overhead(env, client, a.overhead_jobs, a.threads)
    finally:
        worker.terminate()

    for label, size in (("batched", a.batch_size), ("batch_size_1", 1)):
        flush(a.redis_url)
        worker = _run_worker(env, root, label, "asr", ("--max-batch-size", str(size)))
        try:
            client.wait(client.submit_asr(files[0]).id, 120)  # warm up
            report[label] = throughput(env, client, files)
        finally:
            worker.terminate()
    report["batching_speedup"] = round(report["batched"]["jobs_per_second"]
                                       / report["batch_size_1"]["jobs_per_second"], 2)
    flush(a.redis_url)
    if not a.json:
        for k, v in report.items():
            print(f"{k}: {v}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
