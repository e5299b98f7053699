"""docker-compose.yml is valid and has what the service needs (no Docker engine required)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.workers.conftest import REPO


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_compose_file_is_valid():
    out = subprocess.run(["docker-compose", "-f", str(REPO / "docker-compose.yml"), "config"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    config = out.stdout
    for service in ("redis:", "worker-gpu:", "worker-cpu:", "flower:", "gateway:"):
        assert f"\n  {service}\n" in config, service
    assert "--appendonly" in config  # Redis keeps queued jobs across a restart
    assert "driver: nvidia" in config and "- gpu" in config
    assert "cuda:0" in config and "SPEECHQ_REDIS_URL: redis://redis:6379/0" in config
    assert "storage:/data/storage" in config or "target: /data/storage" in config
