"""Recovery from a dead worker: two workers, N ASR jobs, one worker SIGKILLed (its parent and
pool processes at once) while it holds jobs; the time from the kill until every job has
succeeded, and whether each completed exactly once. Default settings throughout (lease,
visibility timeout), so the figure is what an operator gets.

    .venv/bin/python bench/recovery.py --json
    .venv/bin/python bench/recovery.py --json --runs 3 --jobs 30 --recognizer pipeline.inference.recognizer:Recognizer

The clips are Harvard sentences spoken by flite's slt voice (2-3 s each). Uses Redis db 14
(flushed). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO)] + [x for x in sys.path if Path(x or ".").resolve() != Path(__file__).parent]

from tests.workers.conftest import (  # noqa: E402
    WorkerProcess,
    flush,
    service_environment,
    settings_for,
)

REAL_RECOGNIZER = "pipeline.inference.recognizer:Recognizer"


def spoken_clips(folder: Path, n: int) -> list[Path]:
    """`n` wavs of Harvard sentences spoken by flite (slt)."""
    lines = (REPO / "pipeline" / "resources" / "harvard-sentences.txt").read_text().splitlines()
    sentences = [s.strip() for s in lines if s.strip() and not s.startswith("#")]
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for i in range(n):
        path = folder / f"{i:03d}.wav"
        if not path.exists():
            text = sentences[i % len(sentences)]
            subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(path)], check=True)
        clips.append(path)
    return clips


def one_run(env: dict, root: Path, clips: list[Path], run: int) -> dict:
    from workers.client import Client

    flush(env["SPEECHQ_REDIS_URL"])
    victim = WorkerProcess(env, root / f"victim-{run}.log", "asr").wait_ready()
    survivor = WorkerProcess(env, root / f"survivor-{run}.log", "asr").wait_ready()
    client = Client(settings_for(env))
    try:
        for w in (victim, survivor):  # both pool processes have their model before the clock starts
            _warm(client, clips[0], w)
        ids = [client.submit_asr(c).id for c in clips]
        deadline = time.monotonic() + 120
        while True:
            held = [j for j in client.get_many(ids)
                    if j.state == "running" and j.worker == victim.name]
            if held or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        victim.kill()
        killed = time.monotonic()
        jobs = [client.wait(i, 300) for i in ids]
        recovered = time.monotonic() - killed
        return {"seconds": round(recovered, 2), "held_by_killed_worker": len(held),
                "succeeded": sum(j.state == "succeeded" for j in jobs),
                "completed_twice": sum(j.completions > 1 for j in jobs),
                "retried": sum(j.attempts > 1 for j in jobs)}
    finally:
        victim.terminate()
        survivor.terminate()


def _warm(client, clip: Path, worker) -> None:
    """Submit jobs until `worker` has run one (the two workers race for each)."""
    for _ in range(20):
        job = client.wait(client.submit_asr(clip).id, 300)
        if job.worker == worker.name:
            return
    raise RuntimeError(f"{worker.name} never took a job")


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop the workers and Redis
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--jobs", type=int, default=30)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    p.add_argument("--recognizer", default=REAL_RECOGNIZER)
    a = p.parse_args()

    from workers.settings import Settings

    root = Path(tempfile.mkdtemp(prefix="speechq-recovery-"))
    env = service_environment(root, redis_url=a.redis_url, recognizer=a.recognizer, threads=1,
                              test_hooks=0)
    for name in ("SOFT_TIME_LIMIT", "HARD_TIME_LIMIT", "VISIBILITY_TIMEOUT", "LEASE_SECONDS",
                 "RESTORE_INTERVAL", "BATCH_WAIT_MS"):
        env.pop(f"SPEECHQ_{name}")  # the shipped defaults, not the tests' short ones
    env["SPEECHQ_CHECKPOINTS"] = str(REPO / "checkpoints")
    defaults = Settings()
    clips = spoken_clips(root / "clips", a.jobs)
    runs = [one_run(env, root, clips, i) for i in range(a.runs)]
    report = {
        "machine": platform.node(), "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
        "recognizer": a.recognizer, "jobs": a.jobs,
        "lease_seconds": defaults.lease_seconds, "visibility_timeout": defaults.visibility_timeout,
        "runs": runs,
        "recovery_p50_s": statistics.median(r["seconds"] for r in runs),
        "all_succeeded_once": all(r["succeeded"] == a.jobs and not r["completed_twice"]
                                  for r in runs),
    }
    flush(a.redis_url)
    if not a.json:
        for r in runs:
            print(r)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
