"""Storage for artifacts on S3: the same interface as `LocalStore`, through one boto3 S3 client.

Writes are atomic at the final key, as on disk. `open_write` keeps the first `part_size` bytes in
memory: an object that fits is sent with ONE PutObject when the `with` block ends cleanly; a larger
one becomes a multipart upload (smart_open's `MultipartWriter`, parts of `part_size`), completed
only on a clean close. S3 shows an object at its key only once PutObject or
CompleteMultipartUpload succeeds, so a failure leaves the key as it was (absent, or the previous
object). On any failure -- an exception inside the `with`, a part that keeps failing after
botocore's retries, a failed completion -- the multipart upload is aborted (smart_open's
`terminate`, AbortMultipartUpload), so no parts are left billed in the bucket; if even the abort
fails, the upload id is logged (remove it with `aws s3api abort-multipart-upload`, or a bucket
lifecycle rule `AbortIncompleteMultipartUpload`). No temporary key and copy are needed.

Errors become `StoreError` naming the URI and S3's error code and message (never credentials).
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import botocore.exceptions
import smart_open

from runner.errors import StoreError
from runner.io.store import split_uri

log = logging.getLogger(__name__)

MiB = 1 << 20
PART_SIZE = 16 * MiB  # S3's minimum part is 5 MiB (smart_open raises smaller values to it)
MISSING = ("NoSuchKey", "404", "NotFound")


def describe(exc: BaseException) -> str:
    """What went wrong, from botocore's error: `Code: Message` for an AWS answer, else its text.

    smart_open wraps botocore's errors (ValueError/OSError); the botocore error is found in the
    chain. Only the error code and message are shown: never the request, its headers or signature.
    """
    err: BaseException | None = exc
    seen = 0
    while err is not None and seen < 5:
        if isinstance(err, botocore.exceptions.ClientError):
            info = err.response.get("Error", {})
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
            code = info.get("Code") or f"HTTP {status}"
            return f"{code}: {one_line(str(info.get('Message') or 'no message'))}"
        if isinstance(err, botocore.exceptions.NoCredentialsError):
            return ("no AWS credentials found (boto3's standard chain: environment variables, "
                    "backend.profile / AWS_PROFILE, ~/.aws, an instance or task role)")
        if isinstance(err, botocore.exceptions.BotoCoreError):
            return str(err)
        err = getattr(err, "backend_error", None) or err.__cause__
        seen += 1
    return f"{type(exc).__name__}: {exc}"


def one_line(text: str, limit: int = 200) -> str:
    """An error's text on one line, cut at `limit` characters: an endpoint that is not the service's
    answers with a page of HTML or XML.

    >>> one_line("<!doctype html>\\n<html>\\n  <body>Not Found</body>\\n</html>", 30)
    '<!doctype html> <html> <body>N…'
    """
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit].rstrip() + "…"


def error_code(exc: BaseException) -> str | None:
    """The AWS error code behind `exc` (through smart_open's wrappers), if there is one."""
    err: BaseException | None = exc
    for _ in range(5):
        if err is None:
            return None
        if isinstance(err, botocore.exceptions.ClientError):
            return str(err.response.get("Error", {}).get("Code") or "")
        err = getattr(err, "backend_error", None) or err.__cause__
    return None


AWS_ERRORS = (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError)


def _is_aws_error(exc: BaseException) -> bool:
    """botocore's own errors, and smart_open's wrappers of them (ValueError / OSError with a cause)."""
    if isinstance(exc, AWS_ERRORS):
        return True
    if isinstance(exc, (ValueError, OSError)):
        return isinstance(getattr(exc, "backend_error", None) or exc.__cause__, AWS_ERRORS)
    return False


class _Upload(io.BufferedIOBase):
    """The bytes of one S3 object: a single PutObject if they fit in one part, else multipart.

    `commit` sends or completes them; `abort` drops them. Both through smart_open with the store's
    client, so retries and endpoints are the client's.
    """

    def __init__(self, client: Any, uri: str, part_size: int) -> None:
        super().__init__()
        self._client = client
        self._uri = uri
        self._part_size = part_size
        self._head: io.BytesIO | None = io.BytesIO()
        self._multipart: Any = None  # smart_open.s3.MultipartWriter once the bytes outgrow a part
        self._size = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._size

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._size += len(view)
        if self._multipart is not None:
            self._multipart.write(view)
            return len(view)
        assert self._head is not None
        self._head.write(view)
        if self._head.tell() >= self._part_size:
            head, self._head = self._head, None
            self._multipart = smart_open.open(
                self._uri, "wb", compression="disable",
                transport_params={"client": self._client, "min_part_size": self._part_size})
            self._multipart.write(head.getbuffer())  # uploads part 1 (and more for a huge write)
        return len(view)

    def commit(self) -> None:
        if self._multipart is not None:
            self._multipart.close()  # the last part, then CompleteMultipartUpload
            return
        assert self._head is not None
        with smart_open.open(self._uri, "wb", compression="disable",
                             transport_params={"client": self._client, "multipart_upload": False}) as out:
            out.write(self._head.getbuffer())  # one PutObject, sent on close
        self._head = None

    def abort(self) -> None:
        self._head = None
        writer, self._multipart = self._multipart, None
        if writer is None:
            return
        upload_id = getattr(writer, "_upload_id", None)
        try:
            writer.terminate()  # AbortMultipartUpload; a no-op when it already completed or aborted
        except Exception as exc:  # keep the original error; say what is left behind
            log.warning("%s: could not abort multipart upload %s (%s); its parts stay billed until "
                        "it is aborted", self._uri, upload_id, describe(exc))


class S3Store:
    """Artifacts in S3 buckets, the `Store` protocol of runner.io.store, through one boto3 client."""

    def __init__(self, client: Any, *, part_size: int = PART_SIZE) -> None:
        self.client = client
        self.part_size = max(part_size, 5 * MiB)

    def _error(self, uri: str, exc: BaseException, doing: str) -> StoreError:
        if error_code(exc) in MISSING:
            return StoreError(f"{uri}: no such object")
        if error_code(exc) == "NoSuchBucket":
            return StoreError(f"{uri}: no such bucket ({describe(exc)})")
        return StoreError(f"{uri}: cannot {doing}: {describe(exc)}")

    @contextlib.contextmanager
    def open_write(self, uri: str) -> Iterator[IO[bytes]]:
        split_uri(uri)
        upload = _Upload(self.client, uri, self.part_size)
        try:
            yield upload  # type: ignore[misc]  # a BufferedIOBase is an IO[bytes] for our callers
            upload.commit()
        except BaseException as exc:
            upload.abort()
            if _is_aws_error(exc):
                raise self._error(uri, exc, "write") from exc
            raise

    def put_bytes(self, uri: str, data: bytes) -> None:
        with self.open_write(uri) as out:
            out.write(data)

    def put_file(self, path: Path, uri: str) -> None:
        with open(path, "rb") as src, self.open_write(uri) as out:
            shutil.copyfileobj(src, out, self.part_size)

    @contextlib.contextmanager
    def open_read(self, uri: str) -> Iterator[IO[bytes]]:
        split_uri(uri)
        try:
            src = smart_open.open(uri, "rb", compression="disable", transport_params={"client": self.client})
        except Exception as exc:
            if _is_aws_error(exc):
                raise self._error(uri, exc, "read") from exc
            raise
        with src:
            try:
                yield src
            except Exception as exc:
                if _is_aws_error(exc):
                    raise self._error(uri, exc, "read") from exc
                raise

    def get_bytes(self, uri: str) -> bytes:
        with self.open_read(uri) as src:
            data: bytes = src.read()
            return data

    def bucket_exists(self, bucket: str) -> bool:
        """Whether the bucket is there (HeadBucket); StoreError when it cannot be reached. A 403
        counts as there: HeadBucket needs s3:ListBucket, which a role that only reads and writes
        objects under a prefix may lack; the writes say so if the role cannot write either."""
        return self.bucket_region(bucket) is not False

    def bucket_region(self, bucket: str) -> str | None | bool:
        """The bucket's region (HeadBucket's x-amz-bucket-region, which S3 sends with a 403 too),
        None when S3 does not say, False when there is no such bucket (bucket_exists)."""
        try:
            answer = self.client.head_bucket(Bucket=bucket)
        except AWS_ERRORS as exc:
            found = error_code(exc)
            if found in ("403", "AccessDenied", "Forbidden"):
                log.info("s3://%s: HeadBucket refused (%s); going on", bucket, describe(exc))
                answer = getattr(exc, "response", {})
            elif found in ("404", "NoSuchBucket", "NotFound"):
                return False
            else:
                raise StoreError(f"s3://{bucket}: {describe(exc)}") from exc
        region = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region")
        return str(region) if region else None

    def delete(self, uri: str) -> None:
        bucket, key = split_uri(uri)
        try:
            self.client.delete_object(Bucket=bucket, Key=key)
        except Exception as exc:
            if _is_aws_error(exc):
                raise self._error(uri, exc, "delete") from exc
            raise

    def exists(self, uri: str) -> bool:
        bucket, key = split_uri(uri)
        try:
            self.client.head_object(Bucket=bucket, Key=key)
        except AWS_ERRORS as exc:
            if error_code(exc) in MISSING:
                return False
            raise self._error(uri, exc, "look up") from exc
        return True

    def list(self, prefix: str) -> Iterator[str]:
        """URIs of the objects under an s3:// prefix, in key order."""
        bucket, key = split_uri(prefix)
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
                for item in page.get("Contents", []):
                    yield f"s3://{bucket}/{item['Key']}"
        except AWS_ERRORS as exc:
            raise self._error(prefix, exc, "list") from exc


__all__ = ["S3Store", "describe", "error_code", "PART_SIZE"]
