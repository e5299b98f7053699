"""Every setting of the service, read once from the environment into a frozen `Settings`.

    settings = Settings.from_env()          # SPEECHQ_* variables, defaults below
    app.conf.update(celery_config(settings))

Celery's own configuration is derived from `Settings` in `celery_config`, so there is one place
to read what the workers do: JSON only, late acks, prefetch 1, time limits, queues and routes.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from kombu import Exchange, Queue

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
S3_SCHEME = "s3://"

# one routing table: task name -> queue; a queue per model so a worker can serve either or both
ROUTES = {
    "speechq.tts": "tts",
    "speechq.asr": "asr",
}
QUEUES = tuple(sorted(set(ROUTES.values())))
KINDS = QUEUES  # a job's kind is the queue it runs on
# model arithmetic (pipeline.inference.precision has the same list; importing it here would load torch)
PRECISIONS = ("fp32", "bf16", "fp16")


def task_name(kind: str) -> str:
    return f"speechq.{kind}"


@dataclass(frozen=True)
class Settings:
    redis_url: str = DEFAULT_REDIS_URL  # broker, result backend and job store
    storage: str = ""  # job audio (inputs/, outputs/): a directory or s3://bucket/prefix ("": per user)
    device: str = "cpu"  # where a worker process puts its models
    precision: str = "fp32"  # model arithmetic: fp32, or bf16/fp16 autocast (pipeline.inference.precision)
    soft_time_limit: float = 300.0  # seconds per task (one batch); the job fails cleanly
    hard_time_limit: float = 330.0  # the pool kills the process; the job is retried
    visibility_timeout: float = 600.0  # the broker's own restore of unacked messages; > hard limit
    restore_interval: float = 10.0  # how often the broker looks for messages past that timeout
    lease_seconds: float = 10.0  # a running job whose owner stops renewing this is put back
    upkeep_interval: float = 2.0  # how often each worker beats, reaps lapsed leases and cleans up
    redis_patience: float = 300.0  # how long a worker's Redis command waits for Redis to return
    worker_expires: int = 3_600  # seconds a gone worker's monitoring keys are kept
    result_expires: int = 86_400  # seconds job records and results are kept after they end
    max_attempts: int = 3  # deliveries lost (crash, OOM kill, hard limit) before dead-letter
    max_batch_size: int = 16  # dynamic batching: jobs per batch (1 turns batching off)
    max_batch_audio_seconds: float = 240.0  # ASR: summed input audio per batch
    max_batch_text_chars: int = 4_000  # TTS: summed text per batch
    batch_wait_ms: float = 5.0  # how long to wait for more jobs once one is in hand
    max_tasks_per_child: int = 1_000  # recycle a worker process after this many batches
    max_memory_per_child_mb: int = 4_096  # ... or when its resident memory passes this
    max_upload_mb: float = 50.0  # gateway: largest audio upload
    max_text_chars: int = 2_000  # gateway and client: longest TTS text
    recognizer: str = "pipeline.inference.recognizer:Recognizer"  # import path of the ASR class
    threads: int = 0  # torch CPU threads per worker process (0: torch's default)
    preload: str = ""  # comma-separated kinds whose models a pool process loads when it starts
    metrics_port: int = 9800  # worker Prometheus endpoint: the first free port from here
    metrics_addr: str = "127.0.0.1"  # ... on this address (0.0.0.0 to let other hosts scrape)
    api_token: str = ""  # gateway: a shared bearer token, an admin's (workers.auth)
    api_tokens_file: str = ""  # gateway: named tokens with scopes, stored as digests (workers.auth)
    gateway_docs: bool = True  # gateway: /docs, /redoc, /openapi.json (behind the token when set)
    gateway_header_timeout: float = 10.0  # gateway: seconds for a request's headers to arrive
    gateway_body_timeout: float = 120.0  # gateway: seconds for a whole request body to arrive
    gateway_read_timeout: float = 15.0  # gateway: longest pause in a request body
    max_concurrent_uploads: int = 32  # gateway: uploads received at once per process (503 beyond)
    max_connections: int = 1_000  # gateway: open connections per process (503 beyond)
    test_hooks: bool = False  # honour fault-injection fields in requests (tests only)

    def __post_init__(self) -> None:
        if not 0 < self.soft_time_limit < self.hard_time_limit:
            raise ValueError("need 0 < soft_time_limit < hard_time_limit")
        if self.visibility_timeout <= self.hard_time_limit:
            raise ValueError("visibility_timeout must exceed hard_time_limit, or a slow job "
                             "is handed to a second worker while the first still runs it")
        if not 0 < self.lease_seconds < self.visibility_timeout:
            raise ValueError("need 0 < lease_seconds < visibility_timeout")
        if self.max_attempts < 1 or self.max_batch_size < 1:
            raise ValueError("max_attempts and max_batch_size must be >= 1")
        if self.batch_wait_ms < 0 or self.max_batch_audio_seconds <= 0 or self.max_batch_text_chars <= 0:
            raise ValueError("batch limits must be positive")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}")
        if self.restore_interval <= 0 or self.result_expires <= 0:
            raise ValueError("restore_interval and result_expires must be positive")
        if not 0 < self.upkeep_interval < self.lease_seconds:
            raise ValueError("need 0 < upkeep_interval < lease_seconds")
        if self.redis_patience < 0 or self.worker_expires <= 0:
            raise ValueError("redis_patience must be >= 0 and worker_expires positive")
        if min(self.gateway_header_timeout, self.gateway_body_timeout, self.gateway_read_timeout) <= 0:
            raise ValueError("the gateway timeouts must be positive")
        if not 0 < self.max_concurrent_uploads < self.max_connections:
            raise ValueError("need 0 < max_concurrent_uploads < max_connections, or uploads "
                             "could take every connection and leave none for reads")
        if self.api_tokens_file:
            object.__setattr__(self, "api_tokens_file",
                               str(Path(self.api_tokens_file).expanduser().resolve()))
        # resolved once, here: no later step depends on the working directory
        object.__setattr__(self, "storage", resolve_storage(self.storage))

    @property
    def storage_dir(self) -> Path:
        """The storage directory (a local storage only)."""
        if self.storage.startswith(S3_SCHEME):
            raise ValueError(f"the storage {self.storage} is an object store, not a directory")
        return Path(self.storage)

    @classmethod
    def from_env(cls, environ: dict | None = None, **overrides) -> "Settings":
        """`SPEECHQ_<FIELD>` for every field (SPEECHQ_REDIS_URL, SPEECHQ_STORAGE, ...)."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = environ.get(f"SPEECHQ_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, raw, type(getattr(cls, f.name)))
        values.setdefault("storage", str(default_storage(environ)))
        return cls(**{**values, **overrides})

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in another process."""
        return {f"SPEECHQ_{k.upper()}": str(int(v) if isinstance(v, bool) else v)
                for k, v in asdict(self).items()}


def default_storage(environ=None) -> Path:
    """The per-user data directory: $XDG_DATA_HOME/speechq/storage, else
    ~/.local/share/speechq/storage (a relative XDG_DATA_HOME is ignored, as the spec says)."""
    environ = os.environ if environ is None else environ
    data_home = environ.get("XDG_DATA_HOME", "")
    if not os.path.isabs(data_home):
        home = environ.get("HOME") or str(Path.home())
        data_home = os.path.join(home, ".local", "share")
    return Path(data_home) / "speechq" / "storage"


def resolve_storage(value: str) -> str:
    """A storage setting made absolute: s3://bucket[/prefix] as given, a directory resolved
    against the working directory of this moment, the default when empty."""
    value = value.strip()
    if not value:
        return str(default_storage())
    if "://" in value:
        bucket = value[len(S3_SCHEME):].partition("/")[0] if value.startswith(S3_SCHEME) else ""
        if not bucket:
            raise ValueError(f"storage {value!r}: a directory or s3://bucket/prefix")
        return value.rstrip("/")
    return str(Path(value).expanduser().resolve())


def _parse(name: str, raw: str, kind: type):
    try:
        if kind is bool:
            return raw.strip().lower() in ("1", "true", "yes", "on")
        return kind(raw)
    except ValueError:
        raise ValueError(f"SPEECHQ_{name.upper()}={raw!r} is not a valid {kind.__name__}") from None


def celery_config(s: Settings) -> dict:
    """Celery's configuration for these settings."""
    return {
        "broker_url": s.redis_url,
        "result_backend": s.redis_url,
        # JSON only: a pickle message could run code in the worker
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # a message is acked when its job has ended, so a dead worker's jobs are redelivered
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": {
            "visibility_timeout": s.visibility_timeout,
            "unacked_restore_interval": s.restore_interval,
            "unacked_restore_throttle": 1,
        },
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,  # reconnect forever after a Redis restart
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_soft_time_limit": s.soft_time_limit,
        "task_time_limit": s.hard_time_limit,
        "task_track_started": True,
        "worker_send_task_events": True,  # Flower works against our broker as it is
        "task_send_sent_event": True,
        "result_expires": s.result_expires,
        "task_queues": [Queue(q, Exchange(q, type="direct"), routing_key=q) for q in QUEUES],
        "task_routes": {name: {"queue": q, "exchange": q, "routing_key": q} for name, q in ROUTES.items()},
        "task_default_queue": QUEUES[0],
        "worker_max_tasks_per_child": s.max_tasks_per_child,
        "worker_max_memory_per_child": s.max_memory_per_child_mb * 1024,  # KiB
        "worker_hijack_root_logger": False,
        "worker_proc_alive_timeout": 300,  # a new pool process may first load its models
        "broker_channel_error_retry": True,
    }
