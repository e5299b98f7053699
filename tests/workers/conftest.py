"""Shared pieces of the service tests: a tiny TTS checkpoint, the test settings, and real
`speechq worker` processes against the real Redis (db 15, flushed by the fixtures).

Model quality does not matter here: the TTS model is a randomly initialised FastSpeech with
tiny dims, the ASR model `stub_recognizer.StubRecognizer`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

from tests.helpers import make_tiny_asr_checkpoint, make_tiny_tts_checkpoint, write_noise_wav  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("SPEECHQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
STUB_RECOGNIZER = "tests.workers.stub_recognizer:StubRecognizer"


def flush(url: str = REDIS_URL) -> None:
    """Empty the test database. Pooled broker connections remember the queues they declared,
    whose bindings the flush deletes: they are dropped too, or a message sent before a worker
    declares its queues again would be routed nowhere."""
    from kombu import pools

    redis.Redis.from_url(url).flushdb()
    pools.reset()


def service_environment(root: Path, redis_url: str = REDIS_URL, **overrides) -> dict:
    """SPEECHQ_* variables for workers and clients of one test setup under `root`."""
    ckpt = root / "checkpoints"
    if not (ckpt / "tts-nat.pt").exists():
        make_tiny_tts_checkpoint(ckpt / "tts-nat.pt")
    shipped_ar = ckpt / "tts-ar-dot.pt"  # the shipped autoregressive model, for jobs that ask for it
    if not shipped_ar.exists():
        shipped_ar.symlink_to(REPO / "checkpoints" / "tts-ar-dot.pt")
    env = {
        "SPEECHQ_REDIS_URL": redis_url,
        "SPEECHQ_STORAGE": str(root / "storage"),
        "SPEECHQ_CHECKPOINTS": str(ckpt),
        "SPEECHQ_RECOGNIZER": STUB_RECOGNIZER,
        "SPEECHQ_TEST_HOOKS": "1",
        "SPEECHQ_SOFT_TIME_LIMIT": "30",
        "SPEECHQ_HARD_TIME_LIMIT": "40",
        "SPEECHQ_VISIBILITY_TIMEOUT": "60",
        "SPEECHQ_LEASE_SECONDS": "3",
        "SPEECHQ_RESTORE_INTERVAL": "1",
        "SPEECHQ_THREADS": "1",
        "SPEECHQ_BATCH_WAIT_MS": "20",
    }
    env.update({f"SPEECHQ_{k.upper()}": str(v) for k, v in overrides.items()})
    return env


def settings_for(env: dict):
    from workers.settings import Settings

    return Settings.from_env(env)


def speechq_command() -> list[str]:
    script = Path(sys.executable).parent / "speechq"
    return [str(script)] if script.exists() else [sys.executable, "-c", "from workers.cli import main; main()"]


class WorkerProcess:
    """A `speechq worker` in its own process group, logging to a file, started in `cwd` (the
    repository unless told)."""

    def __init__(self, env: dict, log_path: Path, queues: str = "tts,asr", args: tuple = (),
                 cwd: Path = REPO):
        self.name = f"test-{uuid.uuid4().hex[:8]}@localhost"
        path = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]  # keep a given path
        self.env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join(path)}
        self.log_path = log_path
        cmd = speechq_command() + ["worker", "--queues", queues, "--hostname", self.name,
                                   "--loglevel", "INFO", *args]
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 60.0) -> "WorkerProcess":
        r = redis.Redis.from_url(self.env["SPEECHQ_REDIS_URL"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if r.zscore("speechq:workers", self.name) is not None:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited ({self.proc.returncode}):\n{self.log()}")
            time.sleep(0.1)
        raise TimeoutError(f"worker not ready after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (warm shutdown), then SIGKILL to the whole group if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap_group()
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the parent and its pool processes at once."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def _reap_group(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # pool processes left behind, if any
        except ProcessLookupError:
            pass


def wait_over_http(http, job_id: str, timeout: float = 60.0) -> dict:
    """Poll a job through the gateway (`http` an httpx client) until it ends or time is up."""
    deadline = time.monotonic() + timeout
    while True:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


class GatewayProcess:
    """`speechq serve` on a free loopback port in its own process; ready once `/v1/live`
    answers."""

    def __init__(self, env: dict, log_path: Path | None = None, args: tuple = ()):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(speechq_command() + ["serve", "--port", str(self.port), *args],
                                     cwd=REPO, env={**os.environ, **env}, stdout=self._log,
                                     stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60.0) -> "GatewayProcess":
        import httpx

        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.base_url}/v1/live", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                log = self.log_path.read_text(errors="replace") if self.log_path else ""
                raise RuntimeError(f"the gateway did not start\n{log}")
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if self.log_path:
            self._log.close()


class RedisServer:
    """A private redis-server with AOF on (as in docker-compose), on a free loopback port, its
    data in `data`: for the tests and benches that stop or restart Redis, so that the shared one
    never is."""

    def __init__(self, data: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.data = data
        self.url = f"redis://127.0.0.1:{self.port}/0"
        data.mkdir(parents=True, exist_ok=True)

    def start(self) -> "RedisServer":
        subprocess.run(["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1",
                        "--port", str(self.port), "--appendonly", "yes", "--appendfsync", "always",
                        "--save", "", "--dir", str(self.data), "--logfile", str(self.data / "log")],
                       check=True)
        r = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                if r.ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self, save: bool = True) -> None:
        """SHUTDOWN: with `save` the AOF is written first, as on a clean restart."""
        try:
            redis.Redis(port=self.port).shutdown(nosave=not save)
        except redis.ConnectionError:
            pass  # not running, or the shutdown closed the connection it came on


@pytest.fixture
def private_redis(tmp_path):
    """A started RedisServer, stopped after the test (ask for it before `start_worker`, so the
    workers stop while their Redis is still there)."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop(save=False)


@pytest.fixture
def start_worker(tmp_path):
    """Factory: start_worker(env, queues="tts,asr", args=(), cwd=REPO) -> a ready WorkerProcess."""
    started: list[WorkerProcess] = []

    def start(env: dict, queues: str = "tts,asr", args: tuple = (), ready: bool = True,
              cwd: Path = REPO):
        w = WorkerProcess(env, tmp_path / f"worker-{len(started)}.log", queues, args, cwd)
        started.append(w)
        return w.wait_ready() if ready else w

    yield start
    for w in started:
        w.terminate()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """One warm worker (tts and asr) shared by a module's tests, and a client for it."""
    from workers.client import Client

    flush()
    root = tmp_path_factory.mktemp("service")
    env = service_environment(root)
    worker = WorkerProcess(env, root / "worker.log").wait_ready()
    client = Client(settings_for(env))
    try:
        # warm up: the first job of a pool process loads torch and the models
        warm = client.wait(client.submit_tts("Warm up.").id, timeout=120)
        assert warm.state == "succeeded", (warm.error, worker.log())
        yield Service(env, root, worker, client)
    finally:
        worker.terminate()
        shutil.rmtree(root / "storage", ignore_errors=True)


class Service:
    def __init__(self, env: dict, root: Path, worker: WorkerProcess, client):
        self.env, self.root, self.worker, self.client = env, root, worker, client

    @property
    def storage(self) -> Path:
        return Path(self.env["SPEECHQ_STORAGE"])
