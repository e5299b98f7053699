"""Where job audio lives: both `workers.storage` backends, the storage setting, and jobs whose
workers and clients run in different folders (a local directory) or share only an S3 endpoint.

The object store is `moto_server` (from `moto[server]`): an S3 emulator in server mode, spoken
to over a real socket on a free loopback port. No real S3-compatible server (MinIO, Ceph RGW)
installs from PyPI or Debian's packages here: Debian's radosgw needs a running Ceph cluster.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import soundfile as sf

from tests.workers.conftest import REPO, flush, service_environment, settings_for, speechq_command
from tests.workers.conftest import write_noise_wav
from workers.settings import Settings
from workers.storage import LocalStorage, ObjectStorage, StorageError, StorageUnavailable

MOTO_SERVER = shutil.which("moto_server", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                                 os.environ.get("PATH", "")]))
AWS_TEST_ENV = {"AWS_ACCESS_KEY_ID": "speechq", "AWS_SECRET_ACCESS_KEY": "speechq-secret",
                "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    """A moto_server process on a free loopback port; its URL."""
    if MOTO_SERVER is None:
        pytest.skip("moto_server not installed (pip install 'moto[server]')")
    port = _free_port()
    log = open(tmp_path_factory.mktemp("s3") / "moto.log", "wb")
    proc = subprocess.Popen([MOTO_SERVER, "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not start: {Path(log.name).read_text()}")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch):
    """A fresh bucket; the AWS_* variables that reach it, set here and returned for workers."""
    import boto3

    env = {**AWS_TEST_ENV, "AWS_ENDPOINT_URL": s3_endpoint}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    bucket = f"speechq-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    return {**env, "bucket": bucket}


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        return LocalStorage(tmp_path / "store")
    bucket = request.getfixturevalue("s3_env")["bucket"]
    return ObjectStorage(f"s3://{bucket}/speechq/test")


# ------------------------------------------------------------------ both backends


def test_put_read_copy_out_delete(storage, tmp_path):
    src = tmp_path / "speech.WAV"
    src.write_bytes(b"RIFF-not-really")
    ref = storage.put_file(src, "job1")
    assert ref == "inputs/job1.wav" and storage.exists(ref)
    with storage.open(ref) as f:
        assert f.read() == b"RIFF-not-really"
    with storage.local_path(ref) as path:
        assert path.read_bytes() == b"RIFF-not-really"
    if isinstance(storage, ObjectStorage):
        assert not path.exists()  # the temporary copy is gone
    out = storage.copy_out(ref, tmp_path / "out" / "copy.wav")
    assert out.read_bytes() == b"RIFF-not-really" and not list(out.parent.glob(".*.tmp"))

    assert storage.put_bytes("outputs/job2.wav", b"wav bytes") == "outputs/job2.wav"
    assert storage.put_file("outputs/job2.wav", "job3") == "outputs/job2.wav"  # by reference
    full = storage.location_of("outputs/job2.wav")
    assert storage.put_file(full, "job4") == "outputs/job2.wav"  # by full location
    assert full.endswith("outputs/job2.wav") and full.startswith(storage.location.split(" ")[0])

    storage.delete(ref)
    assert not storage.exists(ref)
    storage.delete(ref)  # gone already: no error
    for missing in (lambda: storage.open(ref), lambda: storage.copy_out(ref, tmp_path / "x.wav"),
                    lambda: storage.local_path(ref).__enter__()):
        with pytest.raises(StorageError, match="no such file") as e:
            missing()
        assert storage.location.split(" ")[0] in str(e.value)
    with pytest.raises(StorageError, match="no such file") as e:
        storage.put_file(tmp_path / "nowhere.wav", "job5")
    assert storage.location in str(e.value)
    assert not (tmp_path / "x.wav").exists()


@pytest.mark.parametrize("ref", ["../secret.wav", "/etc/hostname", "inputs/../../secret.wav", "",
                                 "s3://other-bucket/inputs/x.wav"])
def test_a_reference_outside_the_storage_is_refused(storage, ref):
    for use in (storage.check, storage.exists, storage.delete, storage.location_of,
                lambda r: storage.put_bytes(r, b"x")):
        with pytest.raises(StorageError):
            use(ref)


def test_local_files_get_the_process_umask(tmp_path):
    st = LocalStorage(tmp_path / "store")
    src = write_noise_wav(tmp_path / "in.wav")
    for umask in (0o022, 0o027):
        old = os.umask(umask)
        try:
            made = [st.resolve(st.put_file(src, f"u{umask}")),
                    st.resolve(st.put_bytes(f"outputs/u{umask}.wav", b"x")),
                    st.copy_out(f"outputs/u{umask}.wav", tmp_path / f"out{umask}.wav")]
        finally:
            os.umask(old)
        assert [stat.S_IMODE(p.stat().st_mode) for p in made] == [0o666 & ~umask] * 3


def test_an_unreachable_object_store_is_named_in_the_error(s3_env, monkeypatch):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    missing_bucket = ObjectStorage("s3://no-such-bucket-here/p")
    with pytest.raises(StorageUnavailable, match="s3://no-such-bucket-here/p at http://127.0.0.1"):
        missing_bucket.put_bytes("outputs/x.wav", b"x")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")
    closed = ObjectStorage(f"s3://{s3_env['bucket']}")
    with pytest.raises(StorageUnavailable, match="Could not connect") as e:
        closed.exists("outputs/x.wav")
    assert closed.location in str(e.value)


# ------------------------------------------------------------------ the setting


def test_the_storage_setting_is_absolute_once_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rel = Settings.from_env({"SPEECHQ_STORAGE": "data/store"})
    assert rel.storage == str(tmp_path / "data" / "store")
    monkeypatch.chdir("/")
    assert Settings.from_env(rel.to_env()).storage == rel.storage  # a pool process elsewhere agrees
    home = {"HOME": str(tmp_path)}
    assert Settings.from_env(home).storage == str(tmp_path / ".local/share/speechq/storage")
    assert Settings.from_env({**home, "XDG_DATA_HOME": "relative"}).storage == \
        str(tmp_path / ".local/share/speechq/storage")
    assert Settings.from_env({**home, "XDG_DATA_HOME": str(tmp_path / "xdg")}).storage == \
        str(tmp_path / "xdg/speechq/storage")
    assert Settings.from_env({"SPEECHQ_STORAGE": "s3://bucket/a/prefix/"}).storage == "s3://bucket/a/prefix"
    for bad in ("s3://", "ftp://host/dir", "s3:///prefix"):
        with pytest.raises(ValueError, match="s3://bucket/prefix"):
            Settings.from_env({"SPEECHQ_STORAGE": bad})


# ------------------------------------------------------------------ across folders and hosts


def _speechq(env: dict, cwd: Path, *args) -> tuple[int, str, str]:
    """`speechq ARGS` in another process and folder; (exit code, last stdout line, stderr)."""
    full_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    out = subprocess.run(speechq_command() + list(args), cwd=cwd, env=full_env, capture_output=True,
                         text=True, timeout=120)
    lines = out.stdout.strip().splitlines()
    return out.returncode, lines[-1] if lines else "", out.stderr


def _folders(tmp_path: Path, *names: str) -> list[Path]:
    for name in names:
        (tmp_path / name).mkdir()
    return [tmp_path / name for name in names]


@pytest.mark.slow
def test_workers_and_clients_in_other_folders_share_a_storage_directory(tmp_path, start_worker):
    """A TTS worker and an ASR worker, each started in its own folder, and a client in a third
    share a storage directory outside all of them: the TTS job's wav, fetched by reference, goes
    back as an ASR job, and a stored file is submitted by its reference, from any folder."""
    from workers.client import Client

    flush()
    tts_dir, asr_dir, client_dir = _folders(tmp_path, "tts-host", "asr-host", "client")
    storage = tmp_path / "shared" / "storage"
    env = service_environment(tmp_path, storage=storage)
    start_worker(env, queues="tts", cwd=tts_dir)
    start_worker(env, queues="asr", cwd=asr_dir)
    client = Client(settings_for(env))
    tts = client.wait(client.submit_tts("Glue the sheet to the dark blue background.").id, 120)
    assert tts.state == "succeeded", tts.error
    ref = tts.result["audio_ref"]
    assert ref == f"outputs/{tts.id}.wav" and Path(tts.result["audio"]) == (storage / ref).resolve()
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((storage / ref).stat().st_mode) == 0o666 & ~umask  # not 0600

    rc, last, err = _speechq(env, client_dir, "result", tts.id, "-o", "fetched.wav")
    assert rc == 0 and (client_dir / "fetched.wav").is_file(), err
    assert sf.info(client_dir / "fetched.wav").samplerate == tts.result["sample_rate"]
    rc, last, err = _speechq(env, client_dir, "submit", "asr", "fetched.wav", "--wait", "--json")
    asr = json.loads(last)
    assert rc == 0 and asr["state"] == "succeeded" and isinstance(asr["result"]["text"], str), err
    # a key of its own per submission: inputs/<id>.<12 hex>.wav
    assert re.fullmatch(rf"inputs/{asr['id']}\.[0-9a-f]{{12}}\.wav", client.get(asr["id"]).request["audio"])

    rc, last, err = _speechq(env, client_dir, "submit", "asr", ref, "--wait", "--json")  # by reference
    by_ref = json.loads(last)
    assert rc == 0 and by_ref["state"] == "succeeded", err
    assert client.get(by_ref["id"]).request["audio"] == ref  # used in place, not copied

    rc, last, err = _speechq(env, client_dir, "result", asr["id"], "-o", "text.txt")
    assert rc == 0 and (client_dir / "text.txt").read_text().strip() == asr["result"]["text"].strip(), err
    rc, last, _ = _speechq(env, client_dir, "submit", "asr", "outputs/none.wav", "--json")
    assert rc == 2 and "no such file" in json.loads(last)["error"]
    (storage / ref).unlink()
    rc, _, err = _speechq(env, client_dir, "result", tts.id, "-o", "gone.wav")
    location = settings_for(env).storage  # one line, naming the storage, no traceback
    assert rc == 1 and location in err and len(err.strip().splitlines()) == 1, err
    for folder in (tts_dir, asr_dir, client_dir):
        assert not (folder / "storage").exists()


@pytest.mark.slow
def test_workers_and_clients_share_an_object_store(tmp_path, start_worker, s3_env):
    """The same path through an S3 endpoint only, no shared directory, and the gateway's upload
    and audio download on it. Workers and clients get the endpoint and credentials through the
    AWS_* environment."""
    import boto3
    from fastapi.testclient import TestClient

    from workers.client import Client
    from workers.gateway import create_gateway

    flush()
    tts_dir, asr_dir, client_dir = _folders(tmp_path, "tts-host", "asr-host", "client")
    bucket = s3_env.pop("bucket")
    url = f"s3://{bucket}/speechq"
    env = {**service_environment(tmp_path, storage=url), **s3_env}
    start_worker(env, queues="tts", cwd=tts_dir)
    start_worker(env, queues="asr", cwd=asr_dir)
    client = Client(settings_for(env))
    tts = client.wait(client.submit_tts("The birch canoe slid on the smooth planks.").id, 120)
    assert tts.state == "succeeded", tts.error
    assert tts.result["audio"] == f"{url}/outputs/{tts.id}.wav"
    wav = client.fetch_audio(tts.id, client_dir / "tts.wav")
    assert sf.info(wav).samplerate == tts.result["sample_rate"]

    rc, last, err = _speechq(env, client_dir, "submit", "asr", "tts.wav", "--wait", "--json")
    asr = json.loads(last)
    assert rc == 0 and asr["state"] == "succeeded" and isinstance(asr["result"]["text"], str), err
    rc, last, err = _speechq(env, client_dir, "submit", "asr", tts.result["audio"], "--wait", "--json")
    assert rc == 0 and json.loads(last)["state"] == "succeeded", err
    assert client.get(json.loads(last)["id"]).request["audio"] == tts.result["audio_ref"]

    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]}
    assert f"speechq/outputs/{tts.id}.wav" in keys
    assert any(re.fullmatch(rf"speechq/inputs/{asr['id']}\.[0-9a-f]{{12}}\.wav", k) for k in keys)

    http = TestClient(create_gateway(settings_for(env)))  # the gateway: uploads, streamed audio
    r = http.post("/v1/jobs/asr", content=wav.read_bytes(), headers={"content-type": "audio/wav"})
    assert r.status_code == 202 and client.wait(r.json()["id"], 60).state == "succeeded"
    r = http.get(f"/v1/jobs/{tts.id}/audio")
    assert r.status_code == 200 and r.content == wav.read_bytes()
    client.storage.delete(tts.result["audio_ref"])
    assert http.get(f"/v1/jobs/{tts.id}/audio").status_code == 410
    rc, last, err = _speechq(env, client_dir, "monitor", "--once")
    assert rc == 0 and last == f"storage: {url} at {s3_env['AWS_ENDPOINT_URL']}", err
    for folder in (tts_dir, asr_dir, client_dir):
        assert not (folder / "storage").exists()
