"""docker-compose.yml is valid and has what the service needs (no Docker engine required)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.workers.conftest import REPO


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_compose_file_is_valid():
    secrets = {"REDIS_PASSWORD": "redis-secret", "FLOWER_USER": "ops", "FLOWER_PASSWORD": "flower-secret"}
    out = subprocess.run(["docker-compose", "-f", str(REPO / "docker-compose.yml"), "config"],
                         capture_output=True, text=True, timeout=60, env={**os.environ, **secrets})
    assert out.returncode == 0, out.stderr
    config = out.stdout
    for service in ("redis:", "worker-gpu:", "worker-cpu:", "flower:", "gateway:"):
        assert f"\n  {service}\n" in config, service
    assert "--appendonly" in config  # Redis keeps queued jobs across a restart
    assert "driver: nvidia" in config and "- gpu" in config
    assert "cuda:0" in config and "SPEECHQ_REDIS_URL: redis://:redis-secret@redis:6379/0" in config
    assert "storage:/data/storage" in config or "target: /data/storage" in config


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_compose_exposes_the_gateway_alone():
    """Redis on the internal network only, with a password; Flower behind basic auth on loopback;
    no service starts without the secrets it needs."""
    import yaml

    secrets = {"REDIS_PASSWORD": "redis-secret", "FLOWER_USER": "ops", "FLOWER_PASSWORD": "flower-secret"}
    out = subprocess.run(["docker-compose", "-f", str(REPO / "docker-compose.yml"), "config"],
                         capture_output=True, text=True, timeout=60, env={**os.environ, **secrets})
    config = yaml.safe_load(out.stdout)
    services = config["services"]
    assert config["networks"]["backend"]["internal"] is True
    assert "ports" not in services["redis"] and list(services["redis"]["networks"]) == ["backend"]
    assert "--requirepass" in services["redis"]["command"]
    for worker in ("worker-gpu", "worker-cpu"):
        assert "ports" not in services[worker] and list(services[worker]["networks"]) == ["backend"]
    (flower,) = services["flower"]["ports"]
    assert str(flower.get("host_ip", flower) if isinstance(flower, dict) else flower).startswith("127.0.0.1")
    assert "--basic-auth=ops:flower-secret" in services["flower"]["command"]
    missing = subprocess.run(["docker-compose", "-f", str(REPO / "docker-compose.yml"), "config"],
                             capture_output=True, text=True, timeout=60,
                             env={k: v for k, v in os.environ.items() if k not in secrets})
    assert missing.returncode != 0 and "REDIS_PASSWORD" in missing.stderr
