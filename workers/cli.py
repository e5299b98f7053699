"""The `speechq` console command: the pipeline's commands plus the service's.

    speechq worker --queues tts,asr --device cuda:0
    speechq submit tts "Hello there." --wait --json
    speechq submit asr speech.wav --wait --json
    speechq status ID [--wait] [--json];  speechq result ID [-o out.wav];  speechq cancel ID
    speechq monitor [--once] [--json]
    speechq batch asr FOLDER -o results.jsonl;  speechq batch tts LINES.txt --out-dir wavs/
    speechq serve --port 8000

With `--json` the last line printed is one object `{"id", "state", "result", "error", ...}`,
`state` one of queued, running, succeeded, failed, cancelled. A command that meets a storage
error (a missing file, an unreachable object store) prints one line naming the storage.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.parse
from pathlib import Path

import click

from pipeline.cli.inference import COMMANDS as INFERENCE_COMMANDS
from pipeline.cli.options import chosen, option_flags
from pipeline.cli.train import COMMANDS as PIPELINE_COMMANDS
from pipeline.inference.options import RecognitionOptions, TTSOptions, requested


class _Main(click.Group):
    """Every command that cannot reach Redis says so in one line and exits 3, in seconds; one
    whose storage refuses or fails says so in one line naming the storage's location."""

    def invoke(self, ctx):
        from kombu.exceptions import OperationalError
        from redis.exceptions import ConnectionError, TimeoutError

        from workers.storage import StorageError

        try:
            return super().invoke(ctx)
        except StorageError as e:
            raise click.ClickException(str(e)) from None
        except (ConnectionError, TimeoutError, OperationalError) as e:
            from workers.jobs import unreachable
            from workers.settings import Settings

            click.echo(f"speechq: {unreachable(Settings.from_env().redis_url, e)}", err=True)
            sys.exit(3)


@click.group(cls=_Main)
@click.version_option(package_name="speechq")
def main() -> None:
    """speechq: Transformer TTS and ASR, trained here and served by Celery workers over Redis."""


for _command in PIPELINE_COMMANDS + INFERENCE_COMMANDS:
    main.add_command(_command)


def _client():
    from workers.client import Client

    try:
        return Client()
    except ValueError as e:  # a setting (SPEECHQ_STORAGE=ftp://...)
        raise click.ClickException(str(e)) from None


def _emit(job: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(job))
        return
    line = f"{job['id']}  {job['state']}"
    if job.get("error"):
        line += f"  error: {job['error']}"
    click.echo(line)
    result = job.get("result") or {}
    if "audio" in result:
        click.echo(f"audio: {result['audio']}  ({result['duration']:.2f} s)")
    if "text" in result:
        click.echo(f"text: {result['text']}")


def _refusal(error: str) -> dict:
    return {"id": None, "state": "failed", "result": None, "error": error}


def _finish(job, wait: bool, timeout: float | None, as_json: bool) -> None:
    """Print a job (after waiting for it when asked); exit 1 if it failed or was cancelled."""
    client = _client()
    if wait:
        job = client.wait(job.id, timeout)
    _emit(job.to_dict(), as_json)
    if job.state in ("failed", "cancelled"):
        sys.exit(1)


# ------------------------------------------------------------------ worker


@main.command("worker")
@click.option("--queues", default="tts,asr", show_default=True, help="comma-separated: tts, asr")
@click.option("--concurrency", "-c", default=1, show_default=True, help="pool processes (one model each)")
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default SPEECHQ_DEVICE or cpu)")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default=None,
              help="model arithmetic: bf16/fp16 autocast (default SPEECHQ_PRECISION or fp32)")
@click.option("--hostname", "-n", default=None, help="worker name (default speechq-<queues>@<host>)")
@click.option("--metrics-port", type=int, default=None,
              help="serve Prometheus metrics here (0: any free port; default SPEECHQ_METRICS_PORT or off)")
@click.option("--max-batch-size", type=int, default=None, help="jobs per batch (1: no batching)")
@click.option("--batch-wait-ms", type=float, default=None, help="wait for more jobs this long")
@click.option("--threads", type=int, default=None, help="torch CPU threads per process")
@click.option("--preload/--no-preload", default=True, show_default=True,
              help="load the models when a pool process starts, not at its first job")
@click.option("--loglevel", "-l", default="INFO", show_default=True)
def worker_cmd(queues, concurrency, device, precision, hostname, metrics_port, max_batch_size,
               batch_wait_ms, threads, preload, loglevel) -> None:
    """Run a worker in the foreground until SIGTERM (warm shutdown: running jobs finish)."""
    from workers.settings import QUEUES, Settings

    chosen = [q.strip() for q in queues.split(",") if q.strip()]
    if not chosen or any(q not in QUEUES for q in chosen):
        raise click.UsageError(f"--queues: choose from {', '.join(QUEUES)}")
    if device is not None and not (device == "cpu" or device == "cuda" or device.startswith("cuda:")):
        raise click.UsageError("--device: cpu, cuda or cuda:N")
    overrides = {k: v for k, v in {"device": device, "precision": precision,
                                   "metrics_port": metrics_port,
                                   "max_batch_size": max_batch_size, "batch_wait_ms": batch_wait_ms,
                                   "threads": threads,
                                   "preload": ",".join(chosen) if preload else ""}.items() if v is not None}
    try:
        settings = Settings.from_env(**overrides)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    os.environ.update(settings.to_env())  # pool processes read the same settings
    from workers.app import app, configure
    from workers.storage import open_storage

    click.echo(f"storage: {open_storage(settings).location}", err=True)

    configure(app, settings)
    hostname = hostname or f"speechq-{'-'.join(chosen)}-{os.getpid()}@{socket.gethostname()}"
    app.worker_main(["worker", "--queues", ",".join(chosen), "--concurrency", str(concurrency),
                     "--hostname", hostname, "--loglevel", loglevel, "--pool", "prefork",
                     "--without-mingle", "--without-gossip"])


# ------------------------------------------------------------------ jobs


@main.group("submit")
def submit_group() -> None:
    """Queue a TTS or ASR job."""


def _job_options(f):
    for option in reversed([
        click.option("--wait", is_flag=True, help="wait until the job has ended"),
        click.option("--timeout", type=float, default=None, help="with --wait: give up after this"),
        click.option("--json", "as_json", is_flag=True, help="print one JSON object"),
        click.option("--id", "job_id", default=None, help="job id (resubmitting an id returns that job)"),
    ]):
        f = option(f)
    return f


@submit_group.command("tts")
@click.argument("text")
@option_flags(TTSOptions)
@_job_options
def submit_tts_cmd(text, wait, timeout, as_json, job_id, **synthesis) -> None:
    """Synthesise TEXT; the result is a file in the storage in --format, wav by default
    (`speechq result ID -o out.wav`)."""
    try:
        job = _client().submit_tts(text, job_id=job_id, **chosen(TTSOptions, synthesis))
    except ValueError as e:
        _emit(_refusal(str(e)), as_json)
        sys.exit(2)
    _finish(job, wait, timeout, as_json)


@submit_group.command("asr")
@click.argument("audio")  # a str: a Path would fold the // of s3://
@option_flags(RecognitionOptions)
@_job_options
def submit_asr_cmd(audio, wait, timeout, as_json, job_id, **decoding) -> None:
    """Transcribe AUDIO: a local file (uploaded into the storage), or a stored file's
    reference (outputs/<id>.wav) or location."""
    try:
        job = _client().submit_asr(audio, job_id=job_id, **chosen(RecognitionOptions, decoding))
    except ValueError as e:  # no such file, bad id
        _emit(_refusal(str(e)), as_json)
        sys.exit(2)
    _finish(job, wait, timeout, as_json)


@main.command("status")
@click.argument("job_id")
@click.option("--wait", is_flag=True)
@click.option("--timeout", type=float, default=None)
@click.option("--json", "as_json", is_flag=True)
def status_cmd(job_id, wait, timeout, as_json) -> None:
    """Show a job's state (and result or error)."""
    from workers.client import JobNotFound

    try:
        job = _client().get(job_id)
    except JobNotFound as e:
        _no_such_job(job_id, e, as_json)
    _finish(job, wait, timeout, as_json)


def _no_such_job(job_id: str, e: Exception, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"id": job_id, "state": None, "result": None, "error": str(e)}))
    else:
        click.echo(f"no such job: {e}", err=True)
    sys.exit(2)


@main.command("result")
@click.argument("job_id")
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write the job's output here: a TTS job's wav, an ASR job's transcript "
                   "(.txt, .json, .srt or .vtt by the suffix)")
def result_cmd(job_id, out) -> None:
    """Print a finished job's result as JSON; with -o write its output to a file and print
    the file's name (TTS) or the text (ASR)."""
    from pipeline.inference.formats import FORMATS, render
    from workers.client import JobNotFound

    client = _client()
    try:
        job, result = client.get(job_id), client.result(job_id)
    except (JobNotFound, RuntimeError) as e:
        raise click.ClickException(str(e)) from None
    if out is None:
        click.echo(json.dumps(result))
        return
    try:
        if job.kind == "tts":
            click.echo(client.fetch_audio(job_id, out))
            return
        fmt = out.suffix.lower().lstrip(".")
        out.write_text(render(result, fmt if fmt in FORMATS else "txt"))
    except OSError as e:
        raise click.ClickException(f"{out}: {e.strerror or e}") from None
    click.echo(result["text"])


@main.command("cancel")
@click.argument("job_id")
@click.option("--timeout", type=float, default=5.0, show_default=True,
              help="seconds to wait for a running job to stop")
@click.option("--json", "as_json", is_flag=True)
def cancel_cmd(job_id, timeout, as_json) -> None:
    """Cancel a job: at once if queued, at its worker's next check if running. Prints the state
    it ends in (`cancelled`, or the state of a job that had already ended); exits 1 if a
    running job did not stop within --timeout."""
    from workers.client import JobNotFound

    client = _client()
    try:
        job = client.cancel(job_id)
    except JobNotFound as e:
        _no_such_job(job_id, e, as_json)
    if not job.done:
        job = client.wait(job_id, timeout)
    _emit(job.to_dict(), as_json)
    if not job.done:
        click.echo(f"{job_id} is still {job.state}: its worker has been asked to stop", err=True)
        sys.exit(1)


# ------------------------------------------------------------------ monitoring


@main.command("monitor")
@click.option("--once", is_flag=True, help="print one snapshot and exit")
@click.option("--json", "as_json", is_flag=True)
@click.option("--interval", default=2.0, show_default=True)
def monitor_cmd(once, as_json, interval) -> None:
    """Workers, queue depths, latency percentiles and failures."""
    from redis.exceptions import ConnectionError, TimeoutError

    from workers import monitoring
    from workers.jobs import CLIENT_PATIENCE, connect, unreachable
    from workers.settings import Settings
    from workers.storage import open_storage

    settings = Settings.from_env()
    url = settings.redis_url
    r = connect(url, CLIENT_PATIENCE)
    storage = open_storage(settings).location  # this process's setting; workers read their own
    while True:
        try:
            snap = monitoring.snapshot(r)
        except (ConnectionError, TimeoutError) as e:
            down = f"Redis is down: {unreachable(url, e)}"
            if once:
                click.echo(json.dumps({"error": down}) if as_json else down)
                sys.exit(3)
            click.echo(time.strftime("%H:%M:%S ") + down)
            time.sleep(interval)
            continue
        if as_json:
            click.echo(json.dumps({**snap, "storage": storage}))
        else:
            if not once:
                click.clear()
            click.echo(time.strftime("%H:%M:%S ") + "speechq monitor")
            click.echo(monitoring.render(snap))
            click.echo(f"storage: {storage}")
        if once:
            return
        time.sleep(interval)


# ------------------------------------------------------------------ collections (issue 7)


@main.group("batch")
def batch_group() -> None:
    """Run a whole collection through the queue (resumable)."""


def _batch_options(f):
    for option in reversed([
        click.option("--max-in-flight", default=64, show_default=True, help="jobs queued at once"),
        click.option("--retry-failed", is_flag=True, help="rerun inputs recorded as failed"),
        click.option("--no-progress", is_flag=True, help="no progress bar"),
    ]):
        f = option(f)
    return f


def _batch_exit(report) -> None:
    click.echo(json.dumps(report.to_dict()))
    if report.failed:
        sys.exit(1)


@batch_group.command("asr")
@click.argument("source")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True,
              help="results JSONL (appended; rerunning skips what it records)")
@click.option("--format", "formats", default="", help="also write subtitles beside each input: srt,vtt,txt")
@option_flags(RecognitionOptions)
@_batch_options
def batch_asr_cmd(source, out, formats, max_in_flight, retry_failed, no_progress, **decoding) -> None:
    """Transcribe SOURCE: a folder (recursive), a glob, or a JSONL manifest of {"audio": path}."""
    from pipeline.inference.formats import FORMATS
    from workers import batch

    subtitles = [f.strip() for f in formats.split(",") if f.strip()]
    if any(f not in FORMATS for f in subtitles):
        raise click.UsageError(f"--format: choose from {', '.join(FORMATS)}")
    try:
        options = requested(RecognitionOptions, chosen(RecognitionOptions, decoding))
        items = batch.asr_items(batch.audio_inputs(source), **options)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    on_done = batch.write_subtitles(subtitles) if subtitles else None
    report = batch.run_batch(_client(), "asr", items, out, on_done, max_in_flight, retry_failed,
                             progress=not no_progress)
    _batch_exit(report)


@batch_group.command("tts")
@click.argument("lines", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="one <line>.wav (or the --format's suffix) per line, and results.jsonl")
@option_flags(TTSOptions)
@_batch_options
def batch_tts_cmd(lines, out_dir, max_in_flight, retry_failed, no_progress, **synthesis) -> None:
    """Synthesise every non-empty line of LINES into its own wav."""
    from workers import batch

    try:
        options = requested(TTSOptions, chosen(TTSOptions, synthesis))
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    client = _client()
    report = batch.run_batch(client, "tts", batch.tts_items(lines, **options), out_dir / "results.jsonl",
                             batch.copy_wavs(client, out_dir), max_in_flight, retry_failed,
                             progress=not no_progress)
    _batch_exit(report)


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
@click.option("--workers", "processes", default=1, show_default=True, help="uvicorn worker processes")
@click.option("--no-auth", is_flag=True, help="listen beyond loopback without any token (anyone is admin)")
def serve_cmd(host, port, processes, no_auth) -> None:
    """The HTTP gateway (OpenAPI docs at /docs). Its limits on slow clients, uploads and
    connections are SPEECHQ_GATEWAY_*_TIMEOUT, SPEECHQ_MAX_CONCURRENT_UPLOADS and
    SPEECHQ_MAX_CONNECTIONS, per process."""
    import uvicorn

    from workers.http_limits import uvicorn_options
    from workers.settings import Settings

    try:
        settings = Settings.from_env()
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    if host not in ("127.0.0.1", "localhost", "::1") and not (
            settings.api_token or settings.api_tokens_file or no_auth):
        raise click.UsageError(f"--host {host}: the gateway would answer anyone as an admin; set "
                               "SPEECHQ_API_TOKENS_FILE or SPEECHQ_API_TOKEN, or pass --no-auth")
    uvicorn.run("workers.gateway:create_gateway", factory=True, host=host, port=port,
                workers=processes, log_level="info", **uvicorn_options(settings))


@main.group("token")
def token_group() -> None:
    """Gateway tokens (SPEECHQ_API_TOKENS_FILE)."""


@token_group.command("new")
@click.argument("name")
@click.option("--scopes", default="submit,read", show_default=True,
              help="comma-separated: submit, read, admin")
def token_new_cmd(name, scopes) -> None:
    """Make a token for NAME: prints the token (shown once; give it to the client) on stderr
    and the tokens-file line (holding only its digest) on stdout."""
    from workers.auth import new_token, parse_scopes, token_line

    try:
        chosen = sorted(parse_scopes(scopes))
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise click.UsageError("NAME: letters, digits and -_.")
    token = new_token()
    click.echo(f"token for {name}: {token}", err=True)
    click.echo(token_line(name, chosen, token))


@main.command("demo")
@click.argument("text", default="The birch canoe slid on the smooth planks.")
@click.option("--device", default="cpu", show_default=True)
def demo_cmd(text, device) -> None:
    """The main job end to end: Redis (started if none answers), a worker, a TTS job, an ASR job
    on its audio, both printed with timings, then a clean shutdown. The jobs run in an empty
    Redis database of their own, so other workers on the same Redis cannot take them."""
    import dataclasses
    import subprocess

    import redis as redis_py

    from workers.client import Client
    from workers.settings import Settings

    settings = Settings.from_env()
    started_redis = None
    url = redis_py.connection.parse_url(settings.redis_url)
    if not Client(settings).ping():
        port = str(url.get("port", 6379))
        click.echo(f"starting redis-server on port {port}")
        subprocess.run(["redis-server", "--daemonize", "yes", "--port", port, "--save", "",
                        "--appendonly", "no"], check=True)
        started_redis = redis_py.Redis(port=int(port))
        time.sleep(0.5)
    private = _private_database(settings.redis_url)
    settings = dataclasses.replace(settings, redis_url=private.url)
    env = {**os.environ, "SPEECHQ_REDIS_URL": private.url}
    worker = subprocess.Popen([sys.executable, "-c", "from workers.cli import main; main()", "worker",
                               "--device", device, "--loglevel", "WARNING"], env=env)
    client = Client(settings)
    try:
        t = time.perf_counter()
        tts = client.wait(client.submit_tts(text).id, timeout=600)
        click.echo(f"tts  {tts.state:9} {time.perf_counter() - t:6.2f} s  "
                   f"{tts.result['audio'] if tts.result else tts.error}")
        if tts.state != "succeeded":
            sys.exit(1)
        t = time.perf_counter()
        asr = client.wait(client.submit_asr(tts.result["audio_ref"]).id, timeout=600)
        click.echo(f"asr  {asr.state:9} {time.perf_counter() - t:6.2f} s  "
                   f"{asr.result['text'] if asr.result else asr.error!r}")
    finally:
        worker.terminate()  # warm shutdown
        worker.wait(60)
        private.release()
        if started_redis is not None:
            started_redis.shutdown(nosave=True)


class _PrivateDatabase:
    """An empty Redis database on the server of `url`, held by a marker key until released
    (then emptied again)."""

    MARKER = "speechq:demo"

    def __init__(self, url: str, db: int):
        import redis as redis_py

        from workers.jobs import connect

        parts = urllib.parse.urlsplit(url)
        self.url = urllib.parse.urlunsplit(parts._replace(path=f"/{db}"))
        self.r = connect(self.url)
        self.held = bool(self.r.dbsize() == 0 and self.r.set(self.MARKER, os.getpid(), nx=True,
                                                              ex=3600))
        self._errors = (redis_py.RedisError,)

    def release(self) -> None:
        try:
            self.r.flushdb()
        except self._errors:
            pass


def _private_database(url: str) -> _PrivateDatabase:
    for db in range(15, 0, -1):  # from the top: 0 is the usual one
        candidate = _PrivateDatabase(url, db)
        if candidate.held:
            return candidate
    raise click.ClickException("no empty Redis database for the demo's jobs (all 16 are in use)")
