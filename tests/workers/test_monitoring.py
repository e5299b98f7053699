"""`speechq monitor` and the worker's Prometheus endpoint, against a real worker."""

from __future__ import annotations

import json
import subprocess
import urllib.request

import pytest

from tests.workers.conftest import REPO, flush, service_environment, settings_for, speechq_command

pytestmark = pytest.mark.slow


def test_monitor_and_metrics_show_the_worker(tmp_path, start_worker):
    from workers.client import Client

    flush()
    env = service_environment(tmp_path, metrics_port=0)
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
    assert snap["failures"] == {"tts:failed": 1} and snap["dead_letters"] == 0

    text = subprocess.run(speechq_command() + ["monitor", "--once"], cwd=REPO, env={**worker.env},
                          capture_output=True, text=True, timeout=60).stdout
    assert worker.name[:32] in text and "tts=0" in text and "dead letters: 0" in text

    with urllib.request.urlopen(f"http://127.0.0.1:{w['metrics_port']}/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    assert 'speechq_queue_length{queue="tts"} 0.0' in metrics
    assert f'speechq_worker_jobs_total{{outcome="succeeded",worker="{worker.name}"}} 1.0' in metrics
    assert "speechq_worker_audio_seconds_total" in metrics and "speechq_job_latency_seconds" in metrics
