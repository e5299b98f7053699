"""Where job audio lives: one `Storage` interface over a local directory or an S3 bucket.

    storage = open_storage(settings)                  # /abs/dir or s3://bucket/prefix
    ref = storage.put_file("speech.wav", job_id)      # "inputs/<job_id>.wav"
    with storage.local_path(ref) as path:             # a temporary copy for the object store
        load_audio(path, 16_000)
    storage.put_bytes(output_ref(job_id), wav_data)   # atomic: readers see all of it or nothing
    storage.copy_out(ref, "out.wav");  storage.exists(ref);  storage.delete(ref)

Messages carry references, keys relative to the storage (`inputs/<id>.wav`), so a worker in a
container, a client on the host and a worker on another machine agree on them whatever each
mounts or reaches the storage as. A reference that would leave the storage is refused.

The object store goes through boto3, the reference S3 client: synchronous like the workers, it
reads the standard AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
AWS_DEFAULT_REGION by itself and does multipart transfers, where s3fs would add an async layer
(aiobotocore, which pins botocore) for nothing we use. With an endpoint set (MinIO, Ceph RGW)
requests use path-style addressing, which those servers accept without DNS set up per bucket.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

INPUTS = "inputs"
OUTPUTS = "outputs"
S3_SCHEME = "s3://"


class StorageError(ValueError):
    """A reference a job may not use, or a stored file that is missing; meant for the user."""


class StorageUnavailable(StorageError):
    """The storage itself cannot be reached or written (not the caller's input)."""


def input_ref(job_id: str, suffix: str) -> str:
    return f"{INPUTS}/{job_id}{suffix.lower()}"


def output_ref(job_id: str, suffix: str = ".wav") -> str:
    return f"{OUTPUTS}/{job_id}{suffix}"


def open_storage(settings) -> "Storage":
    """The backend that `settings.storage` names (already absolute: see `Settings`)."""
    if settings.storage.startswith(S3_SCHEME):
        return ObjectStorage(settings.storage)
    return LocalStorage(settings.storage)


class Storage(ABC):
    """Job audio by reference. `location` says where it is, for messages."""

    location: str

    def put_file(self, src: str | os.PathLike, job_id: str) -> str:
        """Store a local file as the input of `job_id` and return its reference. A file already
        in a local storage directory is used in place; a name that is no local file but names
        a stored one (its reference, `outputs/<id>.wav`, or its full location) is used as is."""
        name = os.fspath(src)
        path = Path(name)
        if path.is_file():
            return self._put_local_file(path, job_id)
        try:
            ref = self.check(name)
        except StorageError:
            ref = None
        if ref is None or not self.exists(ref):
            raise StorageError(f"{name}: no such file (here, or in the storage {self.location})")
        return ref

    @abstractmethod
    def check(self, ref: str | os.PathLike) -> str:
        """The reference, normalised; StorageError if it is empty or leaves the storage."""

    @abstractmethod
    def _put_local_file(self, path: Path, job_id: str) -> str: ...

    @abstractmethod
    def put_bytes(self, ref: str, data: bytes) -> str:
        """Write `data` as `ref` atomically; returns the reference."""

    @abstractmethod
    def open(self, ref: str) -> BinaryIO:
        """A stored file for reading (the caller closes it)."""

    @abstractmethod
    def local_path(self, ref: str):
        """Context manager: a path on this machine to decode `ref` from (for the object store a
        temporary copy, removed on exit)."""

    @abstractmethod
    def copy_out(self, ref: str, dst: str | os.PathLike) -> Path:
        """Copy a stored file to the local path `dst` (atomically); returns `dst`."""

    @abstractmethod
    def exists(self, ref: str) -> bool: ...

    @abstractmethod
    def delete(self, ref: str) -> None:
        """Remove a stored file; one that is already gone is no error."""

    @abstractmethod
    def location_of(self, ref: str) -> str:
        """Where a stored file is, for people: a path or an s3:// URL."""


# ------------------------------------------------------------------ a local directory


class LocalStorage(Storage):
    """A directory on this machine (or a shared mount). Files get the process umask's mode."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        self.location = str(self.root)

    def resolve(self, ref: str | os.PathLike) -> Path:
        """A stored file's path from its reference (relative, or absolute inside the directory);
        symbolic links are followed, so one pointing out of the directory is refused too."""
        if not isinstance(ref, (str, os.PathLike)) or not os.fspath(ref):
            raise StorageError("no audio path given")
        if "://" in os.fspath(ref):  # a URL is no file of this directory
            raise StorageError(f"{ref}: the path is outside the storage directory {self.root}")
        path = Path(ref)
        path = (path if path.is_absolute() else self.root / path).resolve()
        if not path.is_relative_to(self.root):
            raise StorageError(f"{ref}: the path is outside the storage directory {self.root}")
        return path

    def check(self, ref: str | os.PathLike) -> str:
        return self.resolve(ref).relative_to(self.root).as_posix()

    def ref(self, path: str | os.PathLike) -> str:
        """The reference of a file inside the directory."""
        return self.check(path)

    def contains(self, path: str | os.PathLike) -> bool:
        try:
            self.resolve(Path(path).resolve())
        except StorageError:
            return False
        return True

    def output_path(self, job_id: str, suffix: str = ".wav") -> Path:
        return self.resolve(output_ref(job_id, suffix))

    def _put_local_file(self, path: Path, job_id: str) -> str:
        if self.contains(path):
            return self.ref(path)
        ref = input_ref(job_id, path.suffix)
        with path.open("rb") as f, self._writing():
            _write_atomic(self.resolve(ref), lambda out: shutil.copyfileobj(f, out, 1 << 20))
        return ref

    def put_bytes(self, ref: str, data: bytes) -> str:
        with self._writing():
            _write_atomic(self.resolve(ref), lambda out: out.write(data))
        return self.check(ref)

    def open(self, ref: str) -> BinaryIO:
        path = self.resolve(ref)
        try:
            return path.open("rb")
        except (FileNotFoundError, IsADirectoryError):
            raise self._missing(ref) from None

    @contextmanager
    def local_path(self, ref: str) -> Iterator[Path]:
        path = self.resolve(ref)
        if not path.is_file():
            raise self._missing(ref)
        yield path

    def copy_out(self, ref: str, dst: str | os.PathLike) -> Path:
        dst = Path(dst)
        with self.open(ref) as f:
            _write_atomic(dst, lambda out: shutil.copyfileobj(f, out, 1 << 20))
        return dst

    def exists(self, ref: str) -> bool:
        return self.resolve(ref).is_file()

    def delete(self, ref: str) -> None:
        with self._writing():
            self.resolve(ref).unlink(missing_ok=True)

    def location_of(self, ref: str) -> str:
        return str(self.resolve(ref))

    def _missing(self, ref) -> StorageError:
        return StorageError(f"{ref}: no such file in the storage directory {self.root}")

    @contextmanager
    def _writing(self):
        try:
            yield
        except OSError as e:
            raise StorageUnavailable(f"cannot write to the storage directory {self.root}: "
                                     f"{e.strerror or e}") from None


def _write_atomic(dst: Path, fill: Callable[[BinaryIO], object]) -> None:
    """Write through a temporary file beside `dst`, renamed over it when complete."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(6)}.tmp")
    # os.open with 0o666 lets the umask decide the mode (mkstemp would make every file 0600)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------ an S3-compatible bucket


class ObjectStorage(Storage):
    """`s3://bucket/prefix`: a reference `inputs/x.wav` is the key `prefix/inputs/x.wav`.
    The endpoint and credentials come from the standard AWS_* environment variables."""

    def __init__(self, url: str):
        if not url.startswith(S3_SCHEME):
            raise ValueError(f"{url}: not an s3:// URL")
        self.url = url.rstrip("/")
        self.bucket, _, self.prefix = self.url[len(S3_SCHEME):].partition("/")
        if not self.bucket:
            raise ValueError(f"{url}: no bucket named (s3://bucket/prefix)")
        self.endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        self.location = self.url + (f" at {self.endpoint}" if self.endpoint else "")
        self._client = None
        self._lock = threading.Lock()

    @property
    def client(self):
        """The boto3 client, made on first use: in the process that uses it, after any fork."""
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                style = "path" if self.endpoint else "auto"
                self._client = boto3.session.Session().client(
                    "s3", endpoint_url=self.endpoint,
                    config=Config(s3={"addressing_style": style}, retries={"mode": "standard"}))
            return self._client

    def check(self, ref: str | os.PathLike) -> str:
        if not isinstance(ref, (str, os.PathLike)) or not os.fspath(ref):
            raise StorageError("no audio path given")
        name = os.fspath(ref)
        if name.startswith(self.url + "/"):
            name = name[len(self.url) + 1:]
        parts = name.split("/")
        if name.startswith("/") or "://" in name or any(p in ("", ".", "..") for p in parts):
            raise StorageError(f"{ref}: the path is outside the storage {self.location}")
        return name

    def key(self, ref: str) -> str:
        ref = self.check(ref)
        return f"{self.prefix}/{ref}" if self.prefix else ref

    def _put_local_file(self, path: Path, job_id: str) -> str:
        ref = input_ref(job_id, path.suffix)
        with self._errors(ref):
            # multipart for large files; the object appears whole or not at all
            self.client.upload_file(str(path), self.bucket, self.key(ref))
        return ref

    def put_bytes(self, ref: str, data: bytes) -> str:
        key = self.key(ref)
        with self._errors(ref):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
        return self.check(ref)

    def open(self, ref: str) -> BinaryIO:
        key = self.key(ref)
        with self._errors(ref):
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"]

    @contextmanager
    def local_path(self, ref: str) -> Iterator[Path]:
        key = self.key(ref)
        fd, name = tempfile.mkstemp(prefix="speechq-", suffix=Path(key).suffix)
        os.close(fd)
        try:
            with self._errors(ref):
                self.client.download_file(self.bucket, key, name)
            yield Path(name)
        finally:
            Path(name).unlink(missing_ok=True)

    def copy_out(self, ref: str, dst: str | os.PathLike) -> Path:
        key, dst = self.key(ref), Path(dst)
        with self._errors(ref):
            _write_atomic(dst, lambda out: self.client.download_fileobj(self.bucket, key, out))
        return dst

    def exists(self, ref: str) -> bool:
        key = self.key(ref)
        try:
            with self._errors(ref):
                self.client.head_object(Bucket=self.bucket, Key=key)
        except StorageUnavailable:
            raise
        except StorageError:
            return False
        return True

    def delete(self, ref: str) -> None:
        key = self.key(ref)
        with self._errors(ref):
            self.client.delete_object(Bucket=self.bucket, Key=key)  # S3: a missing key is fine

    def location_of(self, ref: str) -> str:
        return f"{self.url}/{self.check(ref)}"

    @contextmanager
    def _errors(self, ref: str):
        """botocore's errors as ours, naming the storage."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as e:
            error = e.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                raise StorageError(f"{ref}: no such file in the storage {self.location}") from None
            detail = f"{error['Message']} ({code})" if error.get("Message") else code or str(e)
            raise StorageUnavailable(f"the storage {self.location}: {detail}") from None
        except BotoCoreError as e:  # no connection, no credentials, ...
            raise StorageUnavailable(f"the storage {self.location}: {e}") from None
