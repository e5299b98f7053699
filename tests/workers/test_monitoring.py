"""`speechq monitor` and the worker's Prometheus endpoint, against a real worker."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request

import pytest

from tests.workers.conftest import REPO, flush, service_environment, settings_for, speechq_command

pytestmark = pytest.mark.slow


def test_monitor_and_metrics_show_the_worker(tmp_path, start_worker):
    from workers.client import Client

    flush()
    env = service_environment(tmp_path)  # metrics on by default
    worker = start_worker(env)
    client = Client(settings_for(env))
    assert client.wait(client.submit_tts("Count me.").id, 60).state == "succeeded"
    assert client.wait(client.submit("tts", {"text": ""}).id, 60).state == "failed"

    out = subprocess.run(speechq_command() + ["monitor", "--once", "--json"], cwd=REPO,
                         env={**worker.env}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    snap = json.loads(out.stdout.strip().splitlines()[-1])
    (w,) = snap["workers"]
    assert w["hostname"] == worker.name and w["online"] and w["device"] == "cpu"
    assert w["jobs_succeeded"] == 1 and w["jobs_failed"] == 1 and w["processed"] == 2
    assert w["audio_seconds"] > 0 and w["audio_seconds_per_second"] > 0
    assert set(w["queues"]) == {"tts", "asr"}
    assert snap["queues"]["tts"] == 0 and snap["latency_seconds"]["tts"]["n"] == 1
    assert snap["oldest_waiting_s"] == {"tts": 0.0, "asr": 0.0}
    assert 9800 <= w["metrics_port"] < 9864 and w["concurrency"] == 1
    assert snap["failures"] == {"tts:failed": 1} and snap["dead_letters"] == 0

    text = subprocess.run(speechq_command() + ["monitor", "--once"], cwd=REPO, env={**worker.env},
                          capture_output=True, text=True, timeout=60).stdout
    assert worker.name[:32] in text and "tts=0 (oldest 0.0 s)" in text and "dead letters: 0" in text
    assert "latency tts (last 300 s): n=1" in text

    with urllib.request.urlopen(f"http://127.0.0.1:{w['metrics_port']}/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    assert 'speechq_queue_length{queue="tts"} 0.0' in metrics
    assert f'speechq_worker_jobs_total{{outcome="succeeded",worker="{worker.name}"}} 1.0' in metrics
    assert "speechq_worker_audio_seconds_total" in metrics and "speechq_job_latency_seconds" in metrics
    assert 'speechq_queue_oldest_age_seconds{queue="asr"} 0.0' in metrics
    outward = _outward_address()
    if outward is not None and not outward.startswith("127."):
        with pytest.raises(OSError):  # loopback only unless SPEECHQ_METRICS_ADDR widens it
            urllib.request.urlopen(f"http://{outward}:{w['metrics_port']}/metrics", timeout=5)


def _outward_address() -> str | None:
    """This host's address on its default route, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the route
        except OSError:
            return None
        return s.getsockname()[0]


def test_waiting_jobs_count_and_age_while_no_worker_runs_them(tmp_path):
    from workers.client import Client

    flush()
    env = service_environment(tmp_path)
    client = Client(settings_for(env))
    ids = [client.submit_tts(f"Waiting {i}.").id for i in range(3)]
    client.cancel(ids[0])  # its message stays in the broker's list, but it will not run
    time.sleep(0.3)
    out = subprocess.run(speechq_command() + ["monitor", "--once", "--json"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)
    snap = json.loads(out.stdout.strip().splitlines()[-1])
    assert snap["queues"]["tts"] == 2 and snap["oldest_waiting_s"]["tts"] >= 0.3

    status = subprocess.run(speechq_command() + ["status", "no-such-job"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 2 and status.stderr.startswith("no such job")
    cancel = subprocess.run(speechq_command() + ["cancel", ids[1]], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert cancel.returncode == 0 and cancel.stdout.split()[:2] == [ids[1], "cancelled"]
