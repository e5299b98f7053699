"""Soak: many short jobs through three workers while one worker is SIGKILLed and replaced every
`--kill-every` seconds and Redis (AOF on) is restarted once; then the leftovers once the jobs'
records have expired.

    .venv/bin/python bench/soak.py --json
    .venv/bin/python bench/soak.py --json --jobs 2000 --kill-every 20

Half the jobs are TTS (a tiny random model), half ASR (the test stub recogniser on 0.5 s clips,
each uploaded into storage). A private redis-server on a free loopback port, with its data in a
temporary folder, so the machine's Redis is never restarted. Reported: jobs lost (not in a final
state by the end), completed twice, by final state; kills and restarts done; and after
`--result-expires` seconds, the stored files of expired jobs still there and the Redis keys of
killed workers still there (both should be 0). Bounded by `--max-seconds`. The last line is one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO)] + [x for x in sys.path if Path(x or ".").resolve() != Path(__file__).parent]

from tests.workers.conftest import (  # noqa: E402
    RedisServer,
    WorkerProcess,
    service_environment,
    settings_for,
    write_noise_wav,
)


def _poll(client, ids: list[str]) -> list:
    import redis

    try:
        return client.get_many(ids)
    except (redis.ConnectionError, redis.TimeoutError):
        return [None] * len(ids)  # Redis restarting


def _submit_all(client, clip: Path, n: int, ids: list[str]) -> None:
    """Queue n jobs, half TTS and half ASR, appending each id as it is queued; a submission that
    meets the Redis restart is tried again under the same id."""
    import redis
    from kombu.exceptions import OperationalError

    for i in range(n):
        job_id = f"soak-{i:05d}"
        while True:
            try:
                if i % 2:
                    client.submit_tts(f"Soak job {i}.", job_id=job_id)
                else:
                    client.submit_asr(clip, job_id=job_id)
                break
            except (redis.ConnectionError, redis.TimeoutError, OperationalError):
                time.sleep(0.5)
        ids.append(job_id)


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop the workers and Redis
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--kill-every", type=float, default=20.0)
    p.add_argument("--redis-restart-at", type=float, default=30.0, help="seconds into the soak")
    p.add_argument("--result-expires", type=int, default=60)
    p.add_argument("--worker-expires", type=int, default=20)
    p.add_argument("--max-seconds", type=float, default=900.0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    import redis

    from workers.client import Client
    from workers.jobs import TERMINAL
    from workers.monitoring import WORKERS

    rng = random.Random(a.seed)
    root = Path(tempfile.mkdtemp(prefix="speechq-soak-"))
    server = RedisServer(root / "redis").start()
    env = service_environment(root, redis_url=server.url, test_hooks=0, threads=1,
                              result_expires=a.result_expires, worker_expires=a.worker_expires)
    for name in ("SOFT_TIME_LIMIT", "HARD_TIME_LIMIT", "VISIBILITY_TIMEOUT", "LEASE_SECONDS",
                 "RESTORE_INTERVAL"):
        env.pop(f"SPEECHQ_{name}")  # the shipped defaults
    client = Client(settings_for(env))
    clip = write_noise_wav(root / "clip.wav", 0.5)
    started = time.monotonic()
    workers = [WorkerProcess(env, root / f"w{i}.log").wait_ready() for i in range(a.workers)]
    killed_names: list[str] = []
    report = {"machine": platform.node(), "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
              "jobs": a.jobs, "workers": a.workers, "kill_every_s": a.kill_every}
    try:
        ids: list[str] = []
        submitter = threading.Thread(target=_submit_all, args=(client, clip, a.jobs, ids),
                                     daemon=True)
        submitter.start()  # polled while it runs: a record may expire before the last is queued
        final: dict[str, object] = {}
        next_kill = time.monotonic() + a.kill_every
        restart_at = started + a.redis_restart_at
        kills = restarts = 0
        def going() -> bool:
            return submitter.is_alive() or len(final) < len(ids)

        while going() and time.monotonic() - started < a.max_seconds:
            now = time.monotonic()
            if restarts == 0 and now >= restart_at:
                server.stop(save=True)
                time.sleep(1.0)
                server.start()
                restarts += 1
            if now >= next_kill:
                victim = workers.pop(rng.randrange(len(workers)))
                victim.kill()
                killed_names.append(victim.name)
                workers.append(WorkerProcess(env, root / f"w{len(killed_names) + a.workers}.log"))
                kills += 1
                next_kill = now + a.kill_every
            waiting = [i for i in list(ids) if i not in final]
            for job_id, job in zip(waiting, _poll(client, waiting)):
                if job is not None and job.state in TERMINAL:
                    final[job_id] = job
            time.sleep(0.5)
        report["submitted"] = len(ids)
        soak_seconds = time.monotonic() - started
        states: dict[str, int] = {}
        for job in final.values():
            states[job.state] = states.get(job.state, 0) + 1
        report.update({
            "soak_seconds": round(soak_seconds, 1), "kills": kills, "redis_restarts": restarts,
            "lost": len(ids) - len(final),
            "completed_twice": sum(j.completions > 1 for j in final.values()),
            "retried": sum(j.attempts > 1 for j in final.values()), "final_states": states,
        })

        # leftovers: wait for the records to expire and the gone workers' keys with them
        time.sleep(max(a.result_expires, a.worker_expires) + 3 * 2.0 + 2)
        r = redis.Redis(port=server.port, decode_responses=True)
        storage = Path(env["SPEECHQ_STORAGE"])
        report["stored_files_left"] = sum(1 for f in storage.rglob("*") if f.is_file())
        report["job_records_left"] = sum(1 for _ in r.scan_iter("speechq:job:*"))
        report["killed_worker_keys_left"] = sum(
            1 for name in killed_names for _ in r.scan_iter(f"speechq:worker:{name}*"))
        report["killed_workers_listed"] = sum(r.zscore(WORKERS, n) is not None
                                              for n in killed_names)
    finally:
        for w in workers:
            w.terminate()
        server.stop(save=False)
    if not a.json:
        for k, v in report.items():
            print(f"{k}: {v}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
