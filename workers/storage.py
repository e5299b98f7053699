"""The storage directory that clients and workers share: job audio travels by reference.

    storage = Storage(settings.storage_dir)
    ref = storage.put_file("speech.wav", job_id)     # "inputs/<job_id>.wav"
    path = storage.resolve(ref)                       # refuses anything outside the directory

Messages carry paths relative to the directory, so a worker in a container and a client on the
host agree on them whatever each mounts it as. Every write is atomic (temporary file + rename).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

INPUTS = "inputs"
OUTPUTS = "outputs"


class StorageError(ValueError):
    """A path a job may not use; the message is meant for the user."""


class Storage:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()

    def resolve(self, ref: str | os.PathLike) -> Path:
        """A stored file's path from its reference (relative, or absolute inside the directory)."""
        if not isinstance(ref, (str, os.PathLike)) or not str(ref):
            raise StorageError("no audio path given")
        path = Path(ref)
        path = (path if path.is_absolute() else self.root / path).resolve()
        if not path.is_relative_to(self.root):
            raise StorageError(f"{ref}: the path is outside the storage directory {self.root}")
        return path

    def ref(self, path: str | os.PathLike) -> str:
        """The reference (relative path) of a file inside the directory."""
        return str(self.resolve(path).relative_to(self.root))

    def contains(self, path: str | os.PathLike) -> bool:
        try:
            self.resolve(Path(path).resolve())
        except StorageError:
            return False
        return True

    def input_ref(self, job_id: str, suffix: str) -> str:
        return f"{INPUTS}/{job_id}{suffix.lower()}"

    def output_path(self, job_id: str, suffix: str = ".wav") -> Path:
        return self.resolve(f"{OUTPUTS}/{job_id}{suffix}")

    def put_file(self, src: str | os.PathLike, job_id: str) -> str:
        """Copy a file in as the input of `job_id`; a file already inside is used where it is."""
        src = Path(src)
        if not src.is_file():
            raise StorageError(f"{src}: no such file")
        if self.contains(src):
            return self.ref(src)
        ref = self.input_ref(job_id, src.suffix)
        with src.open("rb") as f:
            self._write_atomic(self.resolve(ref), _chunks(f))
        return ref

    def _write_atomic(self, dst: Path, chunks: Iterable[bytes]) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
            os.replace(tmp, dst)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def delete(self, ref: str) -> None:
        """Remove a stored file; one already gone is no error."""
        self.resolve(ref).unlink(missing_ok=True)

    def copy_out(self, ref: str, dst: str | os.PathLike) -> Path:
        """Copy a stored file out (atomically) to `dst`."""
        dst = Path(dst)
        with self.resolve(ref).open("rb") as f:
            self._write_atomic(dst, _chunks(f))
        return dst


def _chunks(f, size: int = 1 << 20):
    while chunk := f.read(size):
        yield chunk
