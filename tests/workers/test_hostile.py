"""The gateway against careless and hostile clients, over real sockets, with a real worker.

Decompression bombs, slow and piled-up uploads, other tokens' jobs, unauthenticated probes.
Each test prints the figures it measured (run with -s to see them; docs/BENCHMARKS.md keeps
the current ones).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.bombs import flac_bomb, wav_channels_bomb
from tests.helpers import write_noise_wav
from tests.workers.conftest import REPO, GatewayProcess, speechq_command, wait_over_http

pytestmark = pytest.mark.slow
TIMEOUTS = {"header": 2.0, "body": 4.0, "read": 2.0}
UPLOAD_SLOTS = 16


def _peak_rss_mb(pid: int) -> float:
    """The process's peak resident set so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {pid}")


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Gateway:
    def __init__(self, proc, port: int, tokens: dict[str, str], tmp: Path):
        self.proc, self.port, self.tokens, self.tmp = proc, port, tokens, tmp
        self.base = f"http://127.0.0.1:{port}"

    def http(self, who: str | None) -> httpx.Client:
        headers = {"authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=30)

    def uploads_left(self) -> list[str]:
        return [p.name for p in self.tmp.iterdir() if p.name.startswith("speechq-upload-")]


@pytest.fixture(scope="module")
def gateway(service, tmp_path_factory):
    from workers.auth import new_token, token_line

    root = tmp_path_factory.mktemp("hostile")
    tokens = {name: new_token() for name in ("alice", "bob", "reader", "ops")}
    scopes = {"alice": ["read", "submit"], "bob": ["read", "submit"], "reader": ["read"],
              "ops": ["admin"]}
    (root / "tokens").write_text("# test tokens\n" + "".join(
        token_line(name, scopes[name], tokens[name]) + "\n" for name in tokens))
    tmp = root / "tmp"
    tmp.mkdir()
    env = {**service.worker.env, "SPEECHQ_API_TOKENS_FILE": str(root / "tokens"), "TMPDIR": str(tmp),
           "SPEECHQ_GATEWAY_HEADER_TIMEOUT": str(TIMEOUTS["header"]),
           "SPEECHQ_GATEWAY_BODY_TIMEOUT": str(TIMEOUTS["body"]),
           "SPEECHQ_GATEWAY_READ_TIMEOUT": str(TIMEOUTS["read"]),
           "SPEECHQ_MAX_CONCURRENT_UPLOADS": str(UPLOAD_SLOTS), "SPEECHQ_MAX_CONNECTIONS": "700"}
    env.pop("SPEECHQ_API_TOKEN", None)
    process = GatewayProcess(env, root / "gateway.log").wait_ready()
    gw = Gateway(process.proc, process.port, tokens, tmp)
    yield gw
    process.stop()


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    """30 minutes of 8-channel 384 kHz FLAC in 6 MB: 22 GB as float32."""
    return flac_bomb(tmp_path_factory.mktemp("bomb") / "bomb.flac")


# ------------------------------------------------------------------ hostile input, one a case


def _ten_minute_bomb(tmp: Path) -> bytes:
    return flac_bomb(tmp / "ten.flac", seconds=600.0, block=16384).read_bytes()


HOSTILE = [
    # name, request keywords (built from a tmp dir), expected status, words in the detail
    ("flac-bomb-30min", lambda tmp, bomb: {"content": bomb.read_bytes(),
                                           "headers": {"content-type": "audio/flac"}},
     422, "decoded samples"),
    ("flac-bomb-10min", lambda tmp, bomb: {"content": _ten_minute_bomb(tmp),
                                           "headers": {"content-type": "audio/flac"}},
     422, "decoded samples"),
    ("wav-10000-channels", lambda tmp, bomb: {"content": wav_channels_bomb(tmp / "w.wav").read_bytes(),
                                              "headers": {"content-type": "audio/wav"}},
     422, "10000 channels"),
    ("flac-sent-as-wav", lambda tmp, bomb: {"content": bomb.read_bytes(),
                                            "headers": {"content-type": "audio/wav"}},
     422, "holds FLAC data"),
    ("not-audio", lambda tmp, bomb: {"content": b"<html>" * 1000, "headers": {"content-type": "audio/wav"}},
     422, "not a readable audio file"),
    ("empty", lambda tmp, bomb: {"content": b"", "headers": {"content-type": "audio/wav"}}, 422, "empty"),
    ("declared-too-large", lambda tmp, bomb: {"raw": (
        "POST /v1/jobs/asr HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\n"
        "Content-Type: audio/wav\r\nContent-Length: 1000000000\r\n\r\nRIFF")}, 413, "limit of 50 MB"),
    ("id-path-traversal", lambda tmp, bomb: {"content": write_noise_wav(tmp / "n.wav").read_bytes(),
                                             "params": {"id": "../../etc/passwd"},
                                             "headers": {"content-type": "audio/wav"}},
     422, "job id"),
    ("too-short", lambda tmp, bomb: {"content": write_noise_wav(tmp / "s.wav", 0.02).read_bytes(),
                                     "headers": {"content-type": "audio/wav"}}, 422, "minimum"),
]


@pytest.mark.parametrize("name,build,status,words", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_uploads_get_a_4xx_naming_the_limit(gateway, bomb, tmp_path, name, build, status, words):
    request = build(tmp_path, bomb)
    before = _peak_rss_mb(gateway.proc.pid)
    start = time.monotonic()
    if "raw" in request:  # what httpx will not send: a body shorter than its Content-Length
        r = _raw_response(gateway, request["raw"].format(alice=gateway.tokens["alice"]).encode())
    else:
        with gateway.http("alice") as http:
            r = http.post("/v1/jobs/asr", **request)
    seconds = time.monotonic() - start
    growth = _peak_rss_mb(gateway.proc.pid) - before
    print(f"\n{name}: {r.status_code} in {seconds:.2f} s, gateway peak RSS +{growth:.1f} MB: "
          f"{r.json().get('detail')}")
    assert r.status_code == status and words in r.json()["detail"], r.text
    assert str(tmp_path) not in r.text and "speechq-upload-" not in r.text
    assert growth < 50
    assert seconds < 1.0 or len(request.get("content", b"")) > 2**20
    assert gateway.uploads_left() == []


def _raw_response(gateway, data: bytes) -> httpx.Response:
    s = _raw(gateway, data)
    reply = b""
    while chunk := s.recv(65536):
        reply += chunk
    s.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    return httpx.Response(int(head.split()[1]), content=body)


def test_hostile_text_and_ids(gateway):
    with gateway.http("alice") as http:
        r = http.post("/v1/jobs/tts", json={"text": "a" * 2001})
        assert r.status_code == 422 and "limit is 2000" in r.json()["detail"]
        r = http.post("/v1/jobs/tts", json={"text": "Hi.", "id": "x" * 200})
        assert r.status_code == 422
        r = http.get("/v1/jobs/..%2F..%2Fetc%2Fpasswd")
        assert r.status_code == 404


def test_the_bomb_at_a_worker_fails_its_job_and_the_worker_serves_on(gateway, service, bomb):
    """Past every client check (put straight into storage), the worker refuses it from the
    header too: a failed job with the same message, and memory as before."""
    worker = service.worker.proc.pid
    pool = _children(worker)
    before = {pid: _peak_rss_mb(pid) for pid in [worker, *pool]}
    ref = service.client.storage.put_bytes(f"inputs/bomb-{uuid.uuid4().hex}.flac", bomb.read_bytes())
    job = service.client.submit("asr", {"audio": ref, "name": "bomb.flac", "options": {}})
    job = service.client.wait(job.id, timeout=60)
    growth = max(_peak_rss_mb(pid) - mb for pid, mb in before.items())
    print(f"\nworker: {job.state} ({job.error_type}: {job.error}); peak RSS +{growth:.1f} MB")
    assert job.state == "failed" and "over the limit of 172,800,000 decoded samples" in job.error
    assert growth < 200
    after = service.client.wait(service.client.submit_tts("Still here.").id, timeout=60)
    assert after.state == "succeeded"
    assert service.worker.proc.poll() is None and set(_children(worker)) == set(pool)


# ------------------------------------------------------------------ slow and piled-up clients


def _raw(gateway, data: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", gateway.port), timeout=30)
    s.sendall(data)
    return s


def _post_head(gateway, length: int, token: str) -> bytes:
    return (f"POST /v1/jobs/asr HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: audio/wav\r\nContent-Length: {length}\r\n\r\n").encode()


def _answer(s: socket.socket) -> tuple[bytes, float]:
    """The first bytes the gateway sends back, and when (b"" if it just closed)."""
    start = time.monotonic()
    try:
        data = s.recv(4096)
    except ConnectionResetError:
        data = b""
    return data, time.monotonic() - start


def test_a_body_shorter_than_its_content_length_gets_408(gateway):
    s = _raw(gateway, _post_head(gateway, 100_000, gateway.tokens["alice"]) + b"RIFF" + b"\0" * 100)
    data, seconds = _answer(s)
    s.close()
    print(f"\nshort body: {data[:12]!r} after {seconds:.1f} s")
    assert data.startswith(b"HTTP/1.1 408") and seconds <= TIMEOUTS["read"] + 1.0
    assert gateway.uploads_left() == []


def test_a_byte_a_second_upload_is_closed_at_the_body_deadline(gateway):
    s = _raw(gateway, _post_head(gateway, 100_000, gateway.tokens["alice"]))
    s.settimeout(0.5)
    start = time.monotonic()
    data = b""
    while time.monotonic() - start < TIMEOUTS["body"] + 5:
        try:
            s.sendall(b"\0")  # twice a second: never a pause as long as the read timeout
            data = s.recv(4096)  # the 408, or b"" once closed
            break
        except TimeoutError:
            continue
        except OSError:
            break
    seconds = time.monotonic() - start
    s.close()
    print(f"\nbyte a second: {data[:12]!r} after {seconds:.1f} s")
    assert seconds <= TIMEOUTS["body"] + 1.0 and (data == b"" or data.startswith(b"HTTP/1.1 408"))
    assert gateway.uploads_left() == []


def test_headers_that_never_end_are_cut_off(gateway):
    s = _raw(gateway, b"POST /v1/jobs/asr HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    data, seconds = _answer(s)
    s.close()
    print(f"\nslow headers: closed after {seconds:.1f} s")
    assert data == b"" and seconds <= TIMEOUTS["header"] + 1.0


def test_500_half_open_uploads_are_bounded_and_health_answers(gateway):
    pid = gateway.proc.pid
    base_fds = _fds(pid)
    head = _post_head(gateway, 100_000, gateway.tokens["alice"]) + b"RIFF"
    socks = [_raw(gateway, head) for _ in range(500)]
    time.sleep(1.0)
    held_fds = _fds(pid)
    refused, held = 0, []
    for s in socks:
        s.settimeout(0.05)
        try:
            data = s.recv(4096)
        except TimeoutError:
            held.append(s)
            continue
        refused += data.startswith(b"HTTP/1.1 503")
        s.close()
    with gateway.http("alice") as http:
        live = http.get("/v1/live").status_code
        health = http.get("/v1/health").status_code
    after_refusals_fds = _fds(pid)
    for s in held:
        s.settimeout(TIMEOUTS["body"] + 5)
        data, _ = _answer(s)
        assert data.startswith(b"HTTP/1.1 408"), data
        s.close()
    time.sleep(0.5)
    print(f"\n500 half-open uploads: {refused} refused with 503, {len(held)} held; gateway fds "
          f"{base_fds} before, {held_fds} with all 500 open, {after_refusals_fds} once refused "
          f"ones closed, {_fds(pid)} after; temp files left {len(gateway.uploads_left())}")
    assert len(held) == UPLOAD_SLOTS and refused == 500 - UPLOAD_SLOTS
    assert live == 200 and health == 200
    assert after_refusals_fds <= base_fds + 2 * UPLOAD_SLOTS + 10
    assert gateway.uploads_left() == []


# ------------------------------------------------------------------ ownership


def test_a_job_is_its_submitters_alone(gateway, service, tmp_path):
    alice, bob, ops = gateway.http("alice"), gateway.http("bob"), gateway.http("ops")
    job_id = f"j-{uuid.uuid4().hex[:8]}"
    r = alice.post("/v1/jobs/tts", json={"text": "Alice's secret words.", "id": job_id})
    assert r.status_code == 202, r.text
    job = wait_over_http(alice, job_id)
    assert job["state"] == "succeeded" and job["submitter"] == "alice"

    # bob cannot tell alice's job from one that never was
    never = "never-" + uuid.uuid4().hex[:8]
    for method, suffix in (("GET", ""), ("GET", "/audio"), ("GET", "/transcript"), ("DELETE", "")):
        mine = bob.request(method, f"/v1/jobs/{job_id}{suffix}")
        absent = bob.request(method, f"/v1/jobs/{never}{suffix}")
        assert mine.status_code == absent.status_code == 404
        assert mine.json()["detail"].replace(job_id, "X") == absent.json()["detail"].replace(never, "X")
    # nor take the id over, under either kind; the refusal says nothing of the job
    wav = write_noise_wav(tmp_path / "bob.wav").read_bytes()
    taken = [bob.post("/v1/jobs/tts", json={"text": "Bob's words.", "id": job_id}),
             bob.post("/v1/jobs/asr", params={"id": job_id}, content=wav,
                      headers={"content-type": "audio/wav"})]
    for r in taken:
        assert r.status_code == 409
        assert not any(w in r.text for w in ("tts", "succeeded", "secret", "alice", "Alice"))
    assert taken[0].json() == taken[1].json()
    assert alice.get(f"/v1/jobs/{job_id}").json()["state"] == "succeeded"

    # alice retries: the same request is the same job, a different one a 409
    assert alice.post("/v1/jobs/tts", json={"text": "Alice's secret words.", "id": job_id}).status_code == 202
    r = alice.post("/v1/jobs/tts", json={"text": "Other words.", "id": job_id})
    assert r.status_code == 409 and "different request" in r.json()["detail"]
    asr_id = f"alice-asr-{uuid.uuid4().hex[:8]}"
    for content, status in ((wav, 202), (wav, 202), (wav[:-2000], 409)):
        r = alice.post("/v1/jobs/asr", params={"id": asr_id}, content=content,
                       headers={"content-type": "audio/wav"})
        assert r.status_code == status, r.text
    assert wait_over_http(alice, asr_id)["state"] == "succeeded"

    # the job as alice sees it names no server path and no host
    text = json.dumps(alice.get(f"/v1/jobs/{job_id}").json())
    assert service.env["SPEECHQ_STORAGE"] not in text and "worker" not in json.loads(text)
    assert socket.gethostname() not in text and "localhost" not in text

    # an admin token sees and cancels anyone's job
    assert ops.get(f"/v1/jobs/{job_id}").status_code == 200
    assert ops.get(f"/v1/jobs/{job_id}/audio").status_code == 200
    slow = alice.post("/v1/jobs/tts", json={"text": "Slow."}).json()["id"]
    assert ops.delete(f"/v1/jobs/{slow}").status_code == 200
    for c in (alice, bob, ops):
        c.close()


def test_scopes(gateway):
    with gateway.http("reader") as reader:
        r = reader.post("/v1/jobs/tts", json={"text": "Hi."})
        assert r.status_code == 403 and "submit" in r.json()["detail"]
        assert reader.get("/v1/health").status_code == 200


def test_without_a_token_only_liveness_answers(gateway):
    with gateway.http(None) as anon:
        r = anon.get("/v1/live")
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        for path in ("/v1/health", "/docs", "/redoc", "/openapi.json", "/v1/jobs/x"):
            assert anon.get(path).status_code == 401, path
        assert anon.post("/v1/jobs/tts", json={"text": "Hi."}).status_code == 401
    with httpx.Client(base_url=gateway.base, headers={"authorization": "Bearer nope"}) as wrong:
        assert wrong.get("/v1/health").status_code == 401
    with gateway.http("alice") as alice:
        assert alice.get("/openapi.json").status_code == 200


# ------------------------------------------------------------------ client-side checks


def test_the_client_checks_before_copying_or_queuing(service, bomb, tmp_path):
    from pipeline.frontend.audio import AudioTooLargeError
    from pipeline.frontend.text import TextTooLongError

    inputs = service.storage / "inputs"
    before = sorted(inputs.iterdir()) if inputs.exists() else []
    start = time.monotonic()
    with pytest.raises(AudioTooLargeError, match="decoded samples"):
        service.client.submit_asr(bomb)
    with pytest.raises(TextTooLongError):
        service.client.submit_tts("a" * 2001)
    assert time.monotonic() - start < 1.0
    assert (sorted(inputs.iterdir()) if inputs.exists() else []) == before
    env = {**service.worker.env}
    out = subprocess.run(speechq_command() + ["submit", "asr", str(bomb), "--json"], env=env,
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 2 and "decoded samples" in json.loads(out.stdout.splitlines()[-1])["error"]
    assert (sorted(inputs.iterdir()) if inputs.exists() else []) == before
