"""Storage for artifacts: a local folder that stands in for S3 (`s3://bucket/key` -> `root/bucket/key`).

Every write is atomic: bytes go to a temporary name next to the final one and are moved into place
only when complete, so a reader (or a crashed run) never sees half an object at its final key.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Protocol

from runner.errors import StoreError

BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{0,62}")  # S3's rule, less its 3-character minimum


def split_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/key` -> (bucket, key). The key is the rest of the URI as it is written: an S3
    key may hold `#`, `?` and `%`, which are not a URL's fragment, query or escapes here (as in the
    AWS CLI and boto3).

    >>> split_uri("s3://b/shots/a#1 b?.png")
    ('b', 'shots/a#1 b?.png')
    """
    scheme, sep, rest = uri.partition("://")
    bucket, _, key = rest.partition("/")
    if scheme.lower() != "s3" or not sep or not bucket:
        raise StoreError(f"{uri!r} is not an s3://bucket/key URI")
    if not BUCKET.fullmatch(bucket):
        raise StoreError(f"{uri!r}: {bucket!r} is not a bucket name (lower-case letters, digits, "
                         "'.' and '-', starting with a letter or digit)")
    return bucket, key


class Store(Protocol):
    def open_write(self, uri: str) -> contextlib.AbstractContextManager[IO[bytes]]: ...
    def put_bytes(self, uri: str, data: bytes) -> None: ...
    def put_file(self, path: Path, uri: str) -> None: ...
    def get_bytes(self, uri: str) -> bytes: ...
    def open_read(self, uri: str) -> contextlib.AbstractContextManager[IO[bytes]]: ...
    def exists(self, uri: str) -> bool: ...
    def list(self, prefix: str) -> Iterator[str]: ...
    def delete(self, uri: str) -> None: ...


class LocalStore:
    """S3 stand-in on disk; no path may leave `root`."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()

    def path(self, uri: str) -> Path:
        """The file behind `uri`; refuses keys that would leave the storage root."""
        bucket, key = split_uri(uri)
        parts = [bucket, *key.split("/")]
        if any(p in ("", ".", "..") for p in parts[:-1]) or parts[-1] in (".", ".."):
            raise StoreError(f"{uri!r}: the key must not contain empty, '.' or '..' segments")
        path = self.root.joinpath(*parts).resolve()
        if not path.is_relative_to(self.root):
            raise StoreError(f"{uri!r} leaves the storage root {self.root}")
        return path

    @contextlib.contextmanager
    def open_write(self, uri: str) -> Iterator[IO[bytes]]:
        final = self.path(uri)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            with open(tmp, "wb") as out:
                yield out
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def put_bytes(self, uri: str, data: bytes) -> None:
        with self.open_write(uri) as out:
            out.write(data)

    def put_file(self, path: Path, uri: str) -> None:
        with open(path, "rb") as src, self.open_write(uri) as out:
            shutil.copyfileobj(src, out, 1 << 20)

    @contextlib.contextmanager
    def open_read(self, uri: str) -> Iterator[IO[bytes]]:
        path = self.path(uri)
        try:
            src = open(path, "rb")  # noqa: SIM115 (closed below: only opening it is the store's to explain)
        except FileNotFoundError:
            raise StoreError(f"{uri}: no such object (looked in {path})") from None
        except OSError as exc:  # not readable (permissions), a folder, ...
            raise StoreError(f"{uri}: cannot read {path} ({exc.strerror or exc})") from None
        with src:
            yield src

    def get_bytes(self, uri: str) -> bytes:
        with self.open_read(uri) as src:
            return src.read()

    def exists(self, uri: str) -> bool:
        return self.path(uri).is_file()

    def delete(self, uri: str) -> None:
        """Remove the object (none there: nothing to do), and the folders it leaves empty."""
        path = self.path(uri)
        path.unlink(missing_ok=True)
        for folder in path.parents:
            if folder == self.root or not folder.is_relative_to(self.root):
                break
            try:
                folder.rmdir()
            except OSError:  # not empty
                break

    def list(self, prefix: str) -> Iterator[str]:
        """URIs of the objects under an s3:// prefix, in key order (temporary files left out)."""
        bucket, key = split_uri(prefix)
        folder = self.path(prefix if prefix.endswith("/") else prefix + "/x").parent if key else self.root / bucket
        if not folder.is_dir():
            return
        for path in _walk(str(folder)):
            if not path.endswith(".part"):
                yield f"s3://{bucket}/{Path(path).relative_to(self.root / bucket).as_posix()}"


def _walk(folder: str) -> Iterator[str]:
    """The files under `folder`, depth first, each folder's entries by name (what sorting the paths
    gives), holding one folder's names at a time."""
    with os.scandir(folder) as entries:
        names = sorted((e.name, e.is_dir(follow_symlinks=False)) for e in entries)
    for name, is_dir in names:
        path = os.path.join(folder, name)
        if is_dir:
            yield from _walk(path)
        elif os.path.isfile(path):
            yield path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as src:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
