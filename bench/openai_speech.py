"""Does the OpenAI-compatible speech endpoint cost throughput? N short TTS jobs through
`POST /v1/audio/speech` (all in flight at once, each response streamed to its end) against the
same jobs through the Python client, as `speechq submit tts` sends them (all submitted, then
each waited for), on one worker with dynamic batching.

    .venv/bin/python bench/openai_speech.py --json [--jobs 200] [--format wav] [--tiny]

A worker and a gateway are started on Redis db 11 (flushed); the model is the shipped NAT
model unless --tiny (a random tiny one: the queue and HTTP costs alone). Each round speaks the
same texts through both paths, one after the other (the rounds' texts differ: a number in each
sentence); `audio_seconds_client_http` shows the work was the same. The figures are the best
round of each path and the median of the rounds' paired ratios (the two runs of a round share
the machine's load of the moment). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO)] + [x for x in sys.path if Path(x or ".").resolve() != Path(__file__).parent]

from tests.workers.conftest import (  # noqa: E402  (the test helpers start real workers)
    GatewayProcess,
    WorkerProcess,
    flush,
    service_environment,
    settings_for,
)

TEXTS = ["Please call number {} when you are ready.", "The train to gate {} leaves soon.",
         "Order {} has been shipped today.", "Room {} is on the second floor."]


def _texts(n: int, offset: int) -> list[str]:
    return [TEXTS[i % len(TEXTS)].format(offset + i) for i in range(n)]


def through_client(client, texts: list[str], fmt: str) -> tuple[float, list[str]]:
    start = time.perf_counter()
    # the options the speech endpoint gives its jobs: the voice, the format, OpenAI's 24 kHz
    ids = [client.submit_tts(t, voice="slt", format=fmt, sample_rate=24_000).id for t in texts]
    for job_id in ids:
        job = client.wait(job_id, 600)
        assert job.state == "succeeded", job.error
    return time.perf_counter() - start, ids


def mean_batch(client, ids: list[str]) -> tuple[float, float]:
    """The jobs' mean batch size and their audio's total seconds (the work done)."""
    jobs = [client.wait(job_id, 60) for job_id in ids]  # a streamed body ends before its job
    sizes = [job.batch_size or 1 for job in jobs]
    audio = sum(job.result["duration"] for job in jobs)
    return round(sum(sizes) / len(sizes), 2), round(audio, 1)


async def _through_http(base: str, texts: list[str], fmt: str) -> tuple[float, list[str]]:
    import httpx

    limits = httpx.Limits(max_connections=len(texts), max_keepalive_connections=len(texts))
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as http:
        async def one(text: str) -> str:
            body = {"model": "speechq-tts", "voice": "alloy", "input": text,
                    "response_format": fmt}
            async with http.stream("POST", "/v1/audio/speech", json=body) as r:
                assert r.status_code == 200, await r.aread()
                assert len(await r.aread())
                return r.headers["x-speechq-job"]

        start = time.perf_counter()
        ids = await asyncio.gather(*(one(t) for t in texts))
        return time.perf_counter() - start, list(ids)


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and its reaped children (Linux /proc)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--format", default="wav", help="the response format of both paths")
    parser.add_argument("--tiny", action="store_true", help="a random tiny model")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    flush(args.redis_url)
    root = Path(tempfile.mkdtemp(prefix="speechq-openai-bench-"))
    if not args.tiny:
        (root / "checkpoints").mkdir()
        (root / "checkpoints" / "tts-nat.pt").symlink_to(REPO / "checkpoints" / "tts-nat.pt")
    env = service_environment(root, args.redis_url)
    worker = WorkerProcess(env, root / "worker.log").wait_ready()
    try:
        run(args, env, root, worker)
    finally:
        worker.terminate()


def run(args, env: dict, root: Path, worker: WorkerProcess) -> None:
    from workers.client import Client

    gateway = GatewayProcess(worker.env, root / "gateway.log")
    client = Client(settings_for(env))
    base = gateway.base_url
    try:
        gateway.wait_ready()
        through_client(client, ["Warm up."], args.format)
        asyncio.run(_through_http(base, ["Warm up."], args.format))
        client_runs, http_runs, client_batch, http_batch, audio = [], [], [], [], []
        gateway_cpu, client_cpu, http_client_cpu = [], [], []
        for r in range(args.rounds):
            cpu = time.process_time()
            texts = _texts(args.jobs, r * args.jobs)  # the same jobs through both paths
            seconds, ids = through_client(client, texts, args.format)
            client_cpu.append(round(time.process_time() - cpu, 2))
            client_runs.append(seconds)
            batch, client_audio = mean_batch(client, ids)
            client_batch.append(batch)
            cpu_before, cpu = _cpu_seconds(gateway.proc.pid), time.process_time()
            seconds, ids = asyncio.run(_through_http(base, texts, args.format))
            http_client_cpu.append(round(time.process_time() - cpu, 2))
            http_runs.append(seconds)
            batch, http_audio = mean_batch(client, ids)
            http_batch.append(batch)
            audio.append([client_audio, http_audio])
            gateway_cpu.append(round(_cpu_seconds(gateway.proc.pid) - cpu_before, 2))
            if not args.json:
                print(f"round {r}: client {client_runs[-1]:.2f} s (mean batch {client_batch[-1]}), "
                      f"http {http_runs[-1]:.2f} s (mean batch {http_batch[-1]})")
    finally:
        gateway.stop()
    best_client, best_http = min(client_runs), min(http_runs)
    result = {
        "jobs": args.jobs, "format": args.format, "model": "tiny" if args.tiny else "tts-nat.pt",
        "machine": platform.machine(), "rounds": args.rounds,
        "client_seconds": [round(x, 2) for x in client_runs],
        "http_seconds": [round(x, 2) for x in http_runs],
        "client_mean_batch": client_batch, "http_mean_batch": http_batch,
        "audio_seconds_client_http": audio,
        "gateway_cpu_seconds": gateway_cpu, "caller_cpu_seconds": {
            "client": client_cpu, "http": http_client_cpu},
        "client_jobs_per_s": round(args.jobs / best_client, 2),
        "http_jobs_per_s": round(args.jobs / best_http, 2),
        "http_to_client_throughput": round(best_client / best_http, 3),
        "paired_ratios": [round(c / h, 3) for c, h in zip(client_runs, http_runs)],
        "median_paired_ratio": round(statistics.median(
            c / h for c, h in zip(client_runs, http_runs)), 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
