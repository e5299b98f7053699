"""What the workers are doing, kept in Redis so any process can read it.

Each worker's main process writes a heartbeat (`speechq:workers`, a sorted set of hostnames by
last beat, and `speechq:worker:<host>`, its device, queues and counters); each pool process adds
its batches (jobs, audio seconds, busy seconds) and its live state (active jobs, GPU memory).
`snapshot()` gathers it all with queue depths, latency percentiles and failures for
`speechq monitor`; `MetricsCollector` serves the same per worker to Prometheus, with the queue
depth and the age of the oldest waiting job as gauges an autoscaler can use (Flower has neither).

Queue depth counts the jobs that will run (the job store's per-kind set of queued ids), not the
broker's messages: a cancelled job's message still waits in the list until a worker skips it.
Latency percentiles cover the jobs that ended in the last `LATENCY_WINDOW` seconds, so one cold
start does not stay in p95 for ever. A worker's keys expire `worker_expires` seconds after its
last beat.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from workers.jobs import DEAD_LETTERS, PREFIX, STATS, latency_key, queued_key
from workers.settings import QUEUES

log = logging.getLogger(__name__)

WORKERS = f"{PREFIX}:workers"
RECENT_KEEP = 2000  # batches kept per worker for the audio-seconds-per-second rate
LATENCY_WINDOW = 300.0  # seconds of ended jobs the latency percentiles cover
METRICS_PORTS = 64  # a worker serves metrics on the first free port of [metrics_port, + this)
COUNTERS = ("batches", "jobs_succeeded", "jobs_failed", "jobs_cancelled", "audio_seconds", "busy_seconds")


def worker_key(host: str) -> str:
    return f"{PREFIX}:worker:{host}"


def procs_key(host: str) -> str:
    return f"{PREFIX}:worker:{host}:procs"


def recent_key(host: str) -> str:
    return f"{PREFIX}:worker:{host}:recent"


def worker_keys(host: str) -> list[str]:
    return [worker_key(host), procs_key(host), recent_key(host)]


def _gpu_bytes(device: str) -> int:
    if not device.startswith("cuda"):
        return 0
    import torch

    return int(torch.cuda.memory_reserved(torch.device(device)))


class ProcessStats:
    """What one pool process reports: its live state and each batch it ran."""

    def __init__(self, r, hostname: str, device: str):
        self.r, self.hostname, self.device, self.pid = r, hostname, device, os.getpid()

    def set_active(self, n: int) -> None:
        try:
            state = {"active": n, "device": self.device, "gpu_bytes": _gpu_bytes(self.device),
                     "updated": time.time()}
            self.r.hset(procs_key(self.hostname), str(self.pid), json.dumps(state))
        except Exception as e:  # monitoring never fails a job
            log.warning("could not report process state: %s", e)

    def record_batch(self, kind: str, outcomes: list[str], audio_seconds: float, busy: float) -> None:
        key = worker_key(self.hostname)
        try:
            with self.r.pipeline(transaction=False) as pipe:
                pipe.hincrby(key, "batches", 1)
                for state in ("succeeded", "failed", "cancelled"):
                    if n := sum(1 for o in outcomes if o == state):
                        pipe.hincrby(key, f"jobs_{state}", n)
                pipe.hincrbyfloat(key, "audio_seconds", audio_seconds)
                pipe.hincrbyfloat(key, "busy_seconds", busy)
                pipe.lpush(recent_key(self.hostname),
                           f"{time.time():.3f} {audio_seconds:.3f} {len(outcomes)} {kind}")
                pipe.ltrim(recent_key(self.hostname), 0, RECENT_KEEP - 1)
                pipe.execute()
        except Exception as e:
            log.warning("could not record batch statistics: %s", e)
        self.set_active(0)


def heartbeat(r, hostname: str, info: dict, expires: int = 3600) -> None:
    """The main process's beat: who it is, and which of its pool processes still live. Its keys
    expire `expires` seconds after the last beat."""
    now = time.time()
    with r.pipeline(transaction=False) as pipe:
        pipe.zadd(WORKERS, {hostname: now})
        pipe.hset(worker_key(hostname), mapping={**{k: str(v) for k, v in info.items()}, "heartbeat": now})
        for key in worker_keys(hostname):
            pipe.expire(key, expires)
        pipe.hkeys(procs_key(hostname))
        *_, pids = pipe.execute()
    dead = [p for p in pids if not _alive(int(p))]
    if dead:
        r.hdel(procs_key(hostname), *dead)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Heartbeat:
    """Beats every `every` seconds from a daemon thread until stopped, and runs `upkeep()` (the
    fleet's reaper) after each beat."""

    def __init__(self, r, hostname: str, info: dict, every: float = 2.0, expires: int = 3600,
                 upkeep=None):
        self.r, self.hostname, self.info, self.every = r, hostname, info, every
        self.expires, self.upkeep = expires, upkeep
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="speechq-heartbeat", daemon=True)

    def start(self) -> "Heartbeat":
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            try:
                heartbeat(self.r, self.hostname, self.info, self.expires)
                if self.upkeep is not None:
                    self.upkeep()
            except Exception as e:  # Redis restarting: beat again later
                log.warning("heartbeat failed: %s", e)
            if self._stop.wait(self.every):
                return

    def stop(self) -> None:
        self._stop.set()
        try:
            self.r.zrem(WORKERS, self.hostname)
        except Exception:
            pass


# ------------------------------------------------------------------ reading it back


def percentiles(values: list[float], qs=(50, 95, 99)) -> dict:
    if not values:
        return {f"p{q}": None for q in qs}
    s = sorted(values)
    return {f"p{q}": round(s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))], 4) for q in qs}


def queue_depths(r, queues=QUEUES) -> dict:
    """Jobs waiting to run per queue, and the broker's messages delivered but not yet acked."""
    with r.pipeline(transaction=False) as pipe:
        for q in queues:
            pipe.zcard(queued_key(q))
        pipe.hlen("unacked")
        *depths, unacked = pipe.execute()
    return {**dict(zip(queues, depths)), "unacked": unacked}


def oldest_waiting(r, queues=QUEUES) -> dict:
    """Seconds the oldest waiting job of each queue has waited (0 when none waits)."""
    now = time.time()
    with r.pipeline(transaction=False) as pipe:
        for q in queues:
            pipe.zrange(queued_key(q), 0, 0, withscores=True)
        firsts = pipe.execute()
    return {q: round(max(0.0, now - first[0][1]), 3) if first else 0.0
            for q, first in zip(queues, firsts)}


def recent_latencies(r, kind: str, window: float = LATENCY_WINDOW) -> list[float]:
    """Submit-to-end seconds of the jobs of `kind` that ended within the last `window` seconds."""
    since = time.time() - window
    values = []
    for line in r.lrange(latency_key(kind), 0, -1):  # newest first
        ended, _, seconds = line.partition(" ")
        if not seconds or float(ended) < since:
            break
        values.append(float(seconds))
    return values


def worker_view(r, hostname: str, window: float = 60.0, online_within: float = 10.0) -> dict:
    info = r.hgetall(worker_key(hostname))
    procs = [json.loads(v) for v in r.hgetall(procs_key(hostname)).values()]
    now = time.time()
    recent = [line.split() for line in r.lrange(recent_key(hostname), 0, -1)]
    in_window = [float(a) for t, a, *_ in recent if now - float(t) <= window]
    beat = float(info.get("heartbeat", 0))
    return {
        "hostname": hostname,
        "online": now - beat <= online_within,
        "last_heartbeat_s": round(now - beat, 1),
        "device": info.get("device"),
        "queues": info.get("queues", "").split(",") if info.get("queues") else [],
        "concurrency": int(info.get("concurrency", 0) or 0),
        "metrics_port": int(info.get("metrics_port", 0) or 0),
        "processes": len(procs),
        "active": sum(p.get("active", 0) for p in procs),
        "busy_processes": sum(1 for p in procs if p.get("active", 0)),
        "gpu_memory_mb": round(sum(p.get("gpu_bytes", 0) for p in procs) / 2**20, 1),
        **{k: round(float(info.get(k, 0) or 0), 3) for k in COUNTERS},
        "processed": sum(int(float(info.get(f"jobs_{s}", 0) or 0)) for s in ("succeeded", "failed", "cancelled")),
        "audio_seconds_per_second": round(sum(in_window) / window, 3),
    }


def snapshot(r, queues=QUEUES, window: float = 60.0, online_within: float = 10.0) -> dict:
    hosts = r.zrevrange(WORKERS, 0, -1)
    workers = [worker_view(r, h, window, online_within) for h in hosts]
    stats = {k: int(v) for k, v in r.hgetall(STATS).items()}
    latency = {}
    for kind in queues:
        values = recent_latencies(r, kind)
        latency[kind] = {"n": len(values), "window_s": LATENCY_WINDOW, **percentiles(values)}
    return {
        "time": time.time(),
        "workers": workers,
        "queues": queue_depths(r, queues),
        "oldest_waiting_s": oldest_waiting(r, queues),
        "latency_seconds": latency,
        "jobs": stats,
        "failures": {k: v for k, v in stats.items() if k.endswith(":failed")},
        "dead_letters": r.llen(DEAD_LETTERS),
    }


def render(snap: dict) -> str:
    """The snapshot as a few plain-text tables."""
    lines = [f"{'worker':32} {'on':3} {'device':8} {'gpu MB':>7} {'load':>5} {'active':>6} "
             f"{'done':>7} {'failed':>6} {'audio s/s':>9}"]
    for w in snap["workers"]:
        load = f"{w['busy_processes']}/{w['concurrency'] or w['processes']}"
        lines.append(f"{w['hostname'][:32]:32} {'yes' if w['online'] else 'no':3} "
                     f"{(w['device'] or '-')[:8]:8} {w['gpu_memory_mb']:>7} {load:>5} "
                     f"{w['active']:>6} "
                     f"{w['processed']:>7} {int(w['jobs_failed']):>6} {w['audio_seconds_per_second']:>9}")
    if not snap["workers"]:
        lines.append("(no workers)")
    lines.append("")
    oldest = snap.get("oldest_waiting_s", {})
    lines.append("waiting: " + "  ".join(f"{q}={n} (oldest {oldest.get(q, 0):.1f} s)"
                                        for q, n in snap["queues"].items() if q != "unacked"))
    for kind, lat in snap["latency_seconds"].items():
        lines.append(f"latency {kind} (last {lat['window_s']:g} s): n={lat['n']} p50={lat['p50']} "
                     f"p95={lat['p95']} p99={lat['p99']}")
    failed = "  ".join(f"{k}={v}" for k, v in snap["failures"].items()) or "none"
    lines.append(f"failed jobs: {failed}   dead letters: {snap['dead_letters']}")
    return "\n".join(lines)


# ------------------------------------------------------------------ Prometheus


class MetricsCollector(Collector):
    """One worker's figures and the queue depths, read from Redis at each scrape."""

    def __init__(self, r, hostname: str, queues=QUEUES):
        self.r, self.hostname, self.queues = r, hostname, queues

    def collect(self):
        w = worker_view(self.r, self.hostname)
        labels = ["worker"]
        yield from queue_metrics(self.r, self.queues)
        jobs = CounterMetricFamily("speechq_worker_jobs", "Jobs this worker ended, by outcome",
                                   labels=["worker", "outcome"])
        for outcome in ("succeeded", "failed", "cancelled"):
            jobs.add_metric([self.hostname, outcome], w[f"jobs_{outcome}"])
        yield jobs
        for name, doc, value, family in (
            ("speechq_worker_batches", "Batches run", w["batches"], CounterMetricFamily),
            ("speechq_worker_audio_seconds", "Audio seconds processed", w["audio_seconds"], CounterMetricFamily),
            ("speechq_worker_busy_seconds", "Seconds spent running batches", w["busy_seconds"], CounterMetricFamily),
            ("speechq_worker_active_jobs", "Jobs running now", w["active"], GaugeMetricFamily),
            ("speechq_worker_gpu_memory_bytes", "GPU memory reserved", w["gpu_memory_mb"] * 2**20, GaugeMetricFamily),
            ("speechq_worker_audio_seconds_per_second", "Audio seconds per second, last minute",
             w["audio_seconds_per_second"], GaugeMetricFamily),
        ):
            m = family(name, doc, labels=labels)
            m.add_metric([self.hostname], value)
            yield m
        lat = GaugeMetricFamily("speechq_job_latency_seconds", "Submit-to-end latency of recent jobs",
                                labels=["kind", "quantile"])
        for kind in self.queues:
            for name, v in percentiles(recent_latencies(self.r, kind)).items():
                if v is not None:
                    lat.add_metric([kind, str(int(name[1:]) / 100)], v)
        yield lat
        dead = GaugeMetricFamily("speechq_dead_letters", "Jobs in the dead-letter list")
        dead.add_metric([], self.r.llen(DEAD_LETTERS))
        yield dead


def queue_metrics(r, queues=QUEUES):
    """The gauges an autoscaler reads: jobs waiting per queue, and the oldest one's wait."""
    depth = GaugeMetricFamily("speechq_queue_length", "Jobs waiting to run", labels=["queue"])
    for name, n in queue_depths(r, queues).items():
        depth.add_metric([name], n)
    yield depth
    oldest = GaugeMetricFamily("speechq_queue_oldest_age_seconds",
                               "Seconds the oldest waiting job has waited", labels=["queue"])
    for name, age in oldest_waiting(r, queues).items():
        oldest.add_metric([name], age)
    yield oldest


def start_metrics_server(r, hostname: str, port: int, addr: str = "127.0.0.1") -> int:
    """Serve /metrics for this worker on the first free port of [port, port + METRICS_PORTS),
    or any free port for 0. Returns the port."""
    from prometheus_client import start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(MetricsCollector(r, hostname))
    candidates = [0] if port == 0 else range(port, port + METRICS_PORTS)
    for candidate in candidates:
        try:
            server, _ = start_http_server(candidate, addr=addr, registry=registry)
        except OSError:  # taken by another worker on this host
            continue
        return server.server_address[1]
    raise OSError(f"no free port for metrics in {port}-{port + METRICS_PORTS - 1} on {addr}")
