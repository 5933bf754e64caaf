"""The few Cloud Storage operations the trigger needs, on a lazily created client.

``google.cloud.storage`` is imported on first use only. With ``STORAGE_EMULATOR_HOST`` set
(fake-gcs-server locally and in tests) the client uses anonymous credentials.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from retrain_trigger.errors import BackendRefused, BackendUnavailable, TemplateError

if TYPE_CHECKING:
    from google.cloud.storage import Client

_lock = threading.Lock()
_client: Client | None = None
_client_key: tuple[str, str] | None = None

READ_TIMEOUT = (5.0, 30.0)


def split_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("gs://"):
        raise ValueError(f"not a gs:// URI: {uri!r}")
    bucket, _, name = uri[len("gs://") :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}")
    return bucket, name


def client(project: str = "") -> Client:
    """One storage client per process (re-created if the emulator host changes, as in tests)."""
    global _client, _client_key
    key = (os.environ.get("STORAGE_EMULATOR_HOST", ""), project)
    with _lock:
        if _client is None or _client_key != key:
            from google.cloud import storage

            if key[0]:
                from google.auth.credentials import AnonymousCredentials

                _client = storage.Client(
                    project=project or "local", credentials=AnonymousCredentials()
                )
            else:
                _client = storage.Client(project=project or None)
            _client_key = key
        return _client


def _translate(uri: str, exc: Exception) -> Exception:
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.NotFound):
        return TemplateError(f"{uri} not found")
    if isinstance(exc, gexc.Forbidden | gexc.Unauthorized):
        return BackendRefused(f"{uri}: permission denied ({exc.code})")
    if isinstance(exc, gexc.GoogleAPICallError) and getattr(exc, "code", 0) in (400, 404, 412):
        return BackendRefused(f"{uri}: {exc}")
    return BackendUnavailable(f"{uri} could not be read: {type(exc).__name__}: {exc}")


def read_bytes(uri: str, *, max_bytes: int, deadline: float = 20.0) -> bytes:
    """The object's bytes. Transient errors are retried for ``deadline`` seconds in all, and no
    single attempt waits longer than that either."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    bucket, name = split_uri(uri)
    timeout = (min(READ_TIMEOUT[0], deadline), min(READ_TIMEOUT[1], deadline))
    try:
        blob = client().bucket(bucket).blob(name)
        data = blob.download_as_bytes(
            timeout=timeout, retry=DEFAULT_RETRY.with_timeout(deadline), end=max_bytes
        )
    except Exception as exc:
        raise _translate(uri, exc) from None
    if len(data) > max_bytes:
        raise TemplateError(f"{uri} is larger than {max_bytes} bytes")
    return bytes(data)


def write_bytes(
    uri: str,
    data: bytes,
    *,
    content_type: str = "application/json",
    if_generation_match: int | None = None,
) -> int:
    """Writes an object and returns its generation. ``if_generation_match=0``: create only."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    bucket, name = split_uri(uri)
    try:
        blob = client().bucket(bucket).blob(name)
        blob.upload_from_string(
            data,
            content_type=content_type,
            if_generation_match=if_generation_match,
            timeout=READ_TIMEOUT,
            retry=DEFAULT_RETRY if if_generation_match is not None else None,
        )
    except Exception as exc:
        from google.api_core import exceptions as gexc

        if isinstance(exc, gexc.PreconditionFailed):
            raise
        raise _translate(uri, exc) from None
    return int(blob.generation or 0)


def list_objects(bucket: str, prefix: str = "", *, limit: int = 100_000) -> list[dict[str, Any]]:
    """Name, generation, size and metageneration of the live objects under a prefix."""
    out: list[dict[str, Any]] = []
    for blob in client().list_blobs(bucket, prefix=prefix or None, timeout=READ_TIMEOUT):
        out.append(
            {
                "bucket": bucket,
                "name": blob.name,
                "generation": str(blob.generation or ""),
                "metageneration": str(blob.metageneration or ""),
                "size": str(blob.size or 0),
                "contentType": blob.content_type or "",
                "timeCreated": blob.time_created.isoformat() if blob.time_created else "",
                "updated": blob.updated.isoformat() if blob.updated else "",
            }
        )
        if len(out) >= limit:
            break
    return out


# -- streamed writes (window manifests of any size) --------------------------------------------


def write_stream(
    uri: str,
    chunks: Iterable[bytes],
    *,
    content_type: str = "application/json",
    chunk_size: int = 1024 * 1024,
) -> None:
    """Writes an object from pieces as one resumable upload, sent ``chunk_size`` bytes at a time
    (a multiple of 256 KiB): memory stays bounded by the chunk, whatever the object's size. The
    object appears only when the last piece is sent; when producing the pieces fails, the upload
    is never finished (Cloud Storage discards it) and the error passes through."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    bucket, name = split_uri(uri)
    blob = client().bucket(bucket).blob(name)
    try:
        writer = blob.open(
            "wb",
            chunk_size=chunk_size,
            content_type=content_type,
            timeout=READ_TIMEOUT,
            retry=DEFAULT_RETRY,
            ignore_flush=True,
        )
    except Exception as exc:
        raise _translate(uri, exc) from None
    finished = False
    try:
        for piece in chunks:  # an error making the pieces passes through as it is
            try:
                writer.write(piece)
            except Exception as exc:
                raise _translate(uri, exc) from None
        try:
            writer.close()
        except Exception as exc:
            raise _translate(uri, exc) from None
        finished = True
    finally:
        if not finished:  # cancel the upload: no object, and nothing finishes it later
            with contextlib.suppress(Exception):
                writer.terminate()
