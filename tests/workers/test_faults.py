"""Faults with real processes: a worker SIGKILLed while it holds jobs, a Redis restart while jobs
wait, Redis gone for a minute while a batch runs, a job that kills its process every time (and the
jobs batched with it), jobs over the soft and hard time limits, client commands without Redis.

The broker's visibility timeout stays at its default (ten minutes) wherever a test is about
recovery: the jobs come back through the workers' reaper, within seconds."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from tests.workers.conftest import flush, service_environment, settings_for

pytestmark = pytest.mark.slow


def _client(env):
    from workers.client import Client

    return Client(settings_for(env))


def _wait_all(client, ids, timeout):
    deadline = time.monotonic() + timeout
    return [client.wait(i, max(0.1, deadline - time.monotonic())) for i in ids]


def test_sigkilled_worker_jobs_finish_exactly_once_on_a_second_worker(tmp_path, start_worker):
    flush()
    env = service_environment(tmp_path, soft_time_limit=10, hard_time_limit=12,
                              visibility_timeout=600)
    client = _client(env)
    first = start_worker(env, queues="tts")
    second = start_worker(env, queues="tts")
    second.proc.send_signal(signal.SIGSTOP)  # held back until the first has the jobs
    ids = [client.submit("tts", {"text": f"Job number {i}.", "_test": {"sleep": 0.5}}).id for i in range(8)]
    deadline = time.monotonic() + 60
    while not any(j.state == "running" for j in client.get_many(ids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    held = [j.id for j in client.get_many(ids) if j.state == "running"]
    assert held, "the first worker never started a job"
    first.kill()  # parent and pool process, no chance to hand anything back
    killed = time.monotonic()
    second.proc.send_signal(signal.SIGCONT)
    jobs = _wait_all(client, ids, 120)
    assert [j.state for j in jobs] == ["succeeded"] * len(ids), [j.error for j in jobs]
    # the lease (3 s here) lapses, the reaper's grace passes, the jobs run: not the 600 s timeout
    assert time.monotonic() - killed < 30
    assert all(j.completions == 1 for j in jobs)
    assert all(client.get(i).attempts == 2 for i in held)
    assert client.dead_letters() == []


def test_a_job_that_kills_its_process_every_time_is_dead_lettered(tmp_path, start_worker):
    flush()
    env = service_environment(tmp_path, soft_time_limit=10, hard_time_limit=12,
                              visibility_timeout=600, max_attempts=2)
    client = _client(env)
    # all wait before the worker starts, so the poison job's first batch takes the others too
    poison = client.submit("tts", {"text": "Poison.", "_test": {"crash": True}})
    innocent = [client.submit_tts(f"Innocent {i}.").id for i in range(3)]
    started = time.monotonic()
    start_worker(env, queues="tts")
    jobs = _wait_all(client, innocent, 120)
    assert [j.state for j in jobs] == ["succeeded"] * 3, [j.error for j in jobs]
    assert time.monotonic() - started < 60
    assert max(j.attempts for j in jobs) == 2  # they were in the batch the poison job took down
    job = client.wait(poison.id, 120)
    assert job.state == "failed" and job.error_type == "DeadLetter"
    assert "gave up after 2 attempts" in job.error and "died" in job.error
    assert client.dead_letters() == [poison.id]


def test_time_limits(tmp_path, start_worker):
    flush()
    env = service_environment(tmp_path, soft_time_limit=3, hard_time_limit=5, visibility_timeout=8,
                              max_attempts=2)
    client = _client(env)
    # both wait before the worker starts, so its first task always takes them as one batch; the
    # soft limit splits it and each job then runs alone (submitted later, they batched by chance)
    slow = client.submit("tts", {"text": "Slow.", "_test": {"sleep": 10}})
    hung = client.submit("tts", {"text": "Hung.", "_test": {"hang": 30}})
    start_worker(env, queues="tts")
    job = client.wait(slow.id, 60)
    assert job.state == "failed" and "longer than the time limit of 3 s" in job.error
    job = client.wait(hung.id, 90)
    assert job.state == "failed" and job.error_type == "DeadLetter" and "hard time limit" in job.error
    assert client.wait(client.submit_tts("After.").id, 60).state == "succeeded"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_workers_reconnect_after_a_redis_restart(tmp_path, private_redis, start_worker):
    env = service_environment(tmp_path, redis_url=private_redis.url)
    client = _client(env)
    start_worker(env, queues="tts")
    assert client.wait(client.submit_tts("Warm.").id, 60).state == "succeeded"
    ids = [client.submit("tts", {"text": f"Queued {i}.", "_test": {"sleep": 0.3}}).id for i in range(6)]
    private_redis.stop()  # writes the AOF and exits
    time.sleep(1.0)
    private_redis.start()
    jobs = _wait_all(client, ids, 120)
    assert [j.state for j in jobs] == ["succeeded"] * len(ids), [j.error for j in jobs]
    after = client.wait(client.submit_tts("After the restart.").id, 60)
    assert after.state == "succeeded"


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_a_batch_outlives_a_minute_without_redis(tmp_path, private_redis, start_worker):
    """Redis stopped for 60 s while a worker runs a batch: the results wait for it, and every job
    of the batch succeeds once, on its first attempt."""
    env = service_environment(tmp_path, redis_url=private_redis.url)
    client = _client(env)
    # queued before the worker starts, so its first task takes them all as one batch
    ids = [client.submit("tts", {"text": f"Batched {i}.", "_test": {"sleep": 1.5}}).id
           for i in range(4)]
    start_worker(env, queues="tts")
    deadline = time.monotonic() + 60
    while not all(j.state == "running" for j in client.get_many(ids)):
        assert time.monotonic() < deadline, [j.state for j in client.get_many(ids)]
        time.sleep(0.05)
    private_redis.stop()  # writes the AOF and exits
    time.sleep(60)
    private_redis.start()
    jobs = _wait_all(client, ids, 120)
    assert [j.state for j in jobs] == ["succeeded"] * len(ids), [j.error for j in jobs]
    assert all(j.completions == 1 and j.attempts == 1 and j.batch_size == 4 for j in jobs)
    assert client.wait(client.submit_tts("After.").id, 60).state == "succeeded"


def test_client_commands_without_redis_fail_fast_with_one_line(tmp_path):
    from tests.workers.conftest import REPO, speechq_command

    url = f"redis://127.0.0.1:{_free_port()}/0"  # nothing listens there
    env = {**service_environment(tmp_path, redis_url=url), "PATH": os.environ["PATH"]}
    for args in (["submit", "tts", "Hello."], ["status", "some-id"], ["monitor", "--once"]):
        started = time.monotonic()
        out = subprocess.run(speechq_command() + args, cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=60)
        took = time.monotonic() - started
        lines = (out.stdout + out.stderr).strip().splitlines()
        assert out.returncode == 3 and took < 5, (args, took, lines)
        assert len(lines) == 1 and url in lines[0] and "Traceback" not in lines[0], lines


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_the_gateway_answers_503_without_redis_and_reconnects(tmp_path, private_redis):
    import httpx

    from tests.workers.conftest import GatewayProcess

    env = {**service_environment(tmp_path, redis_url=private_redis.url), "SPEECHQ_API_TOKEN": "t0ken"}
    gateway = GatewayProcess(env).wait_ready()
    try:
        with httpx.Client(base_url=gateway.base_url, timeout=30,
                          headers={"Authorization": "Bearer t0ken"}) as http:
            assert http.post("/v1/jobs/tts", json={"text": "Before."}).status_code == 202
            private_redis.stop()
            started = time.monotonic()
            down = http.post("/v1/jobs/tts", json={"text": "During."})
            assert down.status_code == 503 and time.monotonic() - started < 5
            assert private_redis.url in down.json()["detail"]
            private_redis.start()
            back = http.post("/v1/jobs/tts", json={"text": "After."})
            assert back.status_code == 202, back.text
    finally:
        gateway.stop()
