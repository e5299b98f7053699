"""Cancelling running jobs with real workers, and what a real Flower shows of our jobs.

A cancelled job stops its model call: the shipped recogniser decoding a minute of speech stops
burning CPU within a couple of seconds of the cancel. Flower, listening to the test broker's
events, lists a cancelled job as REVOKED, a failed one as FAILURE, and each job of a dynamic
batch (taken from the broker by the worker, not by Celery's consumer) with its own state and
runtime.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.workers.conftest import (
    REDIS_URL,
    REPO,
    flush,
    service_environment,
    settings_for,
    write_noise_wav,
)

pytestmark = pytest.mark.slow

SENTENCES = ("The birch canoe slid on the smooth planks. Glue the sheet to the dark blue "
             "background. It is easy to tell the depth of a well. ")


def _client(env):
    from workers.client import Client

    return Client(settings_for(env))


def _wait_state(client, job_id, state, timeout=60.0):
    deadline = time.monotonic() + timeout
    while (job := client.get(job_id)).state != state and time.monotonic() < deadline:
        time.sleep(0.02)
    return job


def _pool_cpu_seconds(worker) -> float:
    """User + system CPU time of the worker's pool processes, from /proc."""
    psutil = pytest.importorskip("psutil")
    total = 0.0
    for child in psutil.Process(worker.proc.pid).children(recursive=True):
        try:
            t = child.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


@pytest.mark.skipif(shutil.which("espeak-ng") is None,
                    reason="needs espeak-ng to speak the long clip")
def test_a_cancelled_long_job_stops_the_shipped_recognizer(tmp_path, start_worker):
    flush()
    env = service_environment(tmp_path, recognizer="pipeline.inference.recognizer:Recognizer",
                              checkpoints=REPO / "checkpoints")  # the shipped models
    long_clip, short_clip = tmp_path / "long.wav", tmp_path / "short.wav"
    subprocess.run(["espeak-ng", "-w", str(long_clip), SENTENCES * 8], check=True)  # about 65 s
    subprocess.run(["espeak-ng", "-w", str(short_clip), "Warm up."], check=True)
    worker = start_worker(env, queues="asr")
    client = _client(env)
    warm = client.wait(client.submit_asr(short_clip).id, 120)  # loads torch and the models
    assert warm.state == "succeeded", (warm.error, worker.log())

    job = client.submit_asr(long_clip)
    assert _wait_state(client, job.id, "running").state == "running"
    time.sleep(3.0)  # well into the decoding (alone, it runs for tens of seconds)
    busy_before = _pool_cpu_seconds(worker)
    time.sleep(1.0)
    assert _pool_cpu_seconds(worker) - busy_before > 0.1, "the job was not computing"
    assert client.cancel(job.id).state == "running"
    cancelled_at, cancelled_wall = time.monotonic(), time.time()
    samples = []  # (seconds after the cancel, pool CPU seconds)
    while (t := time.monotonic() - cancelled_at) < 4.0:
        samples.append((t, _pool_cpu_seconds(worker)))
        time.sleep(0.05)
    ended = client.get(job.id)
    assert ended.state == "cancelled" and ended.error == "cancelled while running", ended
    assert ended.finished_at - cancelled_wall < 2.0
    # the last moment the CPU time still grew (by more than scheduler noise)
    growing = [t for (t, cpu), (_, later) in zip(samples, samples[1:]) if later - cpu > 0.02]
    stopped_after = max(growing, default=0.0)
    cpu_after_2s = samples[-1][1] - next(cpu for t, cpu in samples if t >= 2.0)
    print(f"\nCPU stopped {stopped_after:.2f} s after the cancel; state cancelled "
          f"{ended.finished_at - cancelled_wall:.2f} s after it; "
          f"{cpu_after_2s:.3f} CPU s used from 2 s to 4 s after it")
    assert stopped_after < 2.0 and cpu_after_2s < 0.1, samples


# ---------------------------------------------------------------- Flower


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Flower:
    def __init__(self, broker: str, log_path):
        self.port = _free_port()
        env = {**os.environ, "FLOWER_UNAUTHENTICATED_API": "true"}
        self._log = open(log_path, "ab")
        self.log_path = log_path
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "--broker", broker, "flower", f"--port={self.port}",
             "--address=127.0.0.1"], env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True)

    def get(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
            return json.loads(r.read())

    def wait_ready(self, timeout: float = 60.0) -> "Flower":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.get("/api/tasks")
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"flower exited: {self.log_path.read_text()}")
                time.sleep(0.2)
        raise TimeoutError(f"flower not up: {self.log_path.read_text()}")

    def tasks(self, ids, until, timeout: float = 20.0) -> dict:
        """Flower's view of the tasks `ids`, once `until(tasks)` holds (or the time is up)."""
        deadline = time.monotonic() + timeout
        while True:
            every = self.get("/api/tasks?limit=10000")
            seen = {i: every[i] for i in ids if i in every}
            if until(seen) or time.monotonic() > deadline:
                return seen
            time.sleep(0.3)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


@pytest.fixture
def flower(tmp_path):
    pytest.importorskip("flower", reason="flower is not installed (pip install flower)")
    f = Flower(REDIS_URL, tmp_path / "flower.log").wait_ready()
    yield f
    f.stop()


def test_flower_shows_cancelled_failed_and_batched_jobs_as_they_ended(tmp_path, start_worker,
                                                                     flower):
    flush()
    env = service_environment(tmp_path)
    worker = start_worker(env)
    client = _client(env)
    assert client.wait(client.submit_tts("Warm up.").id, 120).state == "succeeded", worker.log()

    # a job Celery delivered, cancelled while running
    alone = client.submit("tts", {"text": "Slow one.", "_test": {"sleep": 30}})
    _wait_state(client, alone.id, "running")
    time.sleep(0.3)  # past the batch's collection window
    client.cancel(alone.id)
    assert client.wait(alone.id, 10).state == "cancelled"

    # a batch: the first job (delivered) holds the worker while the others wait and are taken
    # together; one of them is cancelled while it runs, one has a broken file
    busy = client.submit("tts", {"text": "Hold.", "_test": {"sleep": 1.5}})
    _wait_state(client, busy.id, "running")
    time.sleep(0.3)
    first = client.submit("asr", {"audio": "x.wav", "_test": {"sleep": 2}})  # delivered ...
    files = [write_noise_wav(tmp_path / f"{i}.wav", 0.5 + 0.1 * i, seed=i) for i in range(4)]
    good = [client.submit_asr(f).id for f in files]
    slow = client.submit("asr", {"audio": client.get(good[0]).request["audio"],
                                 "_test": {"sleep": 30}})
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all" * 50)
    # stored as it is: the client would refuse it before queuing, the worker is what we test
    broken = client.submit("asr", {"audio": client.storage.put_file(bad, "broken-input")})
    _wait_state(client, slow.id, "running")
    client.cancel(slow.id)
    jobs = {j.id: j for j in (client.wait(i, 60) for i in [first.id, *good, slow.id, broken.id])}
    assert [jobs[i].state for i in good] == ["succeeded"] * 4, [jobs[i].error for i in good]
    assert jobs[slow.id].state == "cancelled" and jobs[broken.id].state == "failed"
    assert jobs[first.id].state == "failed"  # x.wav does not exist
    batched = [i for i in [*good, slow.id, broken.id] if (jobs[i].batch_size or 0) > 1]
    assert len(batched) >= 3, {i: j.batch_size for i, j in jobs.items()}

    expected = {alone.id: "REVOKED", first.id: "FAILURE", slow.id: "REVOKED",
                broken.id: "FAILURE", **{i: "SUCCESS" for i in good}}
    seen = flower.tasks(expected, lambda s: {i: t["state"] for i, t in s.items()} == expected)
    assert {i: t["state"] for i, t in seen.items()} == expected, (seen, worker.log())
    for job_id in good:
        task = seen[job_id]
        assert task["name"] == "speechq.asr" and task["worker"] == worker.name
        assert task["runtime"] is not None and task["runtime"] > 0
        assert task["received"] and task["started"]
    # Celery's result backend says the same of the tasks it delivered
    assert client.app.AsyncResult(alone.id).state == "REVOKED"
    assert client.app.AsyncResult(first.id).state == "FAILURE"
    print("\nFlower:", json.dumps({i: {k: seen[i][k] for k in ("name", "state", "runtime")}
                                   for i in expected}, indent=1))
