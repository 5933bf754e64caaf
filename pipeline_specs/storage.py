"""Storage helpers the pipeline steps share: local paths and ``gs://`` URIs alike.

Every function here is copied into the components that use it (``additional_funcs``; see
:mod:`pipeline_specs`), so each one is self-contained: it imports what it needs in its own body
and calls only the other helpers listed in :data:`HELPERS`.

- :func:`read_bytes` / :func:`write_bytes`: a whole object or file; a GCS read can be pinned to
  a generation, a local write goes through a temporary file and ``os.replace``.
- :func:`read_champion` / :func:`swap_champion`: the registry's ``champion.json`` pointer, moved
  by compare-and-swap: an ``if_generation_match`` precondition on GCS
  (https://cloud.google.com/storage/docs/request-preconditions), an exclusive lock plus a
  re-read and ``os.replace`` on local disk.

``STORAGE_EMULATOR_HOST`` (fake-gcs-server) is honoured with anonymous credentials.
"""

from collections.abc import Callable


def gcs_client():
    """A storage client; anonymous against an emulator when ``STORAGE_EMULATOR_HOST`` is set."""
    import os

    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        project = os.environ.get("GOOGLE_CLOUD_PROJECT") or "local-emulator"
        return storage.Client(project=project, credentials=AnonymousCredentials())
    return storage.Client()


def split_gcs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ``("bucket", "a/b")``."""
    bucket, _, name = uri[len("gs://") :].partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} is not a valid gs:// URI: no bucket")
    return bucket, name


def local_path(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


def join_uri(base: str, *parts: str) -> str:
    if base.startswith("gs://"):
        return "/".join([base.rstrip("/"), *parts])
    import os

    return os.path.join(local_path(base), *parts)


def read_bytes(uri: str, generation: str = "") -> tuple[bytes, str]:
    """Read a whole object or file; returns ``(content, generation)``.

    With ``generation`` set, reads exactly that GCS generation. The generation returned is the
    one actually read (``""`` for local files).
    """
    if uri.startswith("gs://"):
        from google.api_core import exceptions

        bucket_name, name = split_gcs_uri(uri)
        bucket = gcs_client().bucket(bucket_name)
        blob = bucket.blob(name, generation=int(generation)) if generation else bucket.blob(name)
        try:
            data = blob.download_as_bytes()
        except exceptions.NotFound as exc:
            which = f" generation {generation}" if generation else ""
            raise FileNotFoundError(f"{uri}{which} does not exist") from exc
        return data, str(blob.generation or generation)
    with open(local_path(uri), "rb") as handle:
        return handle.read(), ""


def write_bytes(uri: str, data: bytes, content_type: str = "application/octet-stream") -> None:
    """Write a whole object or file (local files via a temporary file and ``os.replace``)."""
    if uri.startswith("gs://"):
        bucket_name, name = split_gcs_uri(uri)
        blob = gcs_client().bucket(bucket_name).blob(name)
        blob.upload_from_string(data, content_type=content_type)
        return
    import os
    import tempfile

    path = local_path(uri)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_champion(registry_uri: str):
    """Read ``champion.json``; returns ``(pointer or None, token)`` for :func:`swap_champion`.

    The token is the GCS generation read (0 when absent) or, locally, the file's bytes (``None``
    when absent). An unreadable pointer comes back as ``{"_error": "..."}``.
    """
    import json

    uri = join_uri(registry_uri, "champion.json")
    if uri.startswith("gs://"):
        from google.api_core import exceptions

        bucket_name, name = split_gcs_uri(uri)
        bucket = gcs_client().bucket(bucket_name)
        for _ in range(5):
            blob = bucket.get_blob(name)
            if blob is None:
                return None, 0
            try:
                data = bucket.blob(name, generation=blob.generation).download_as_bytes()
            except exceptions.NotFound:
                continue  # replaced between the two calls: read again
            token = int(blob.generation)
            break
        else:
            raise RuntimeError(f"{uri} keeps changing; could not read a stable version")
    else:
        try:
            data, _ = read_bytes(uri)
        except FileNotFoundError:
            return None, None
        token = data
    try:
        pointer = json.loads(data)
        if not isinstance(pointer, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        return {"_error": f"{uri} is not a valid champion pointer ({exc})"}, token
    return pointer, token


def swap_champion(registry_uri: str, data: bytes, token) -> bool:
    """Replace ``champion.json`` only if it is still what :func:`read_champion` saw.

    On GCS: an ``if_generation_match`` precondition (0 = must not exist). Locally: an exclusive
    lock on ``champion.json.lock``, a re-read, then a temporary file moved with ``os.replace``.
    Returns False when another writer got there first.
    """
    uri = join_uri(registry_uri, "champion.json")
    if uri.startswith("gs://"):
        from google.api_core import exceptions

        bucket_name, name = split_gcs_uri(uri)
        blob = gcs_client().bucket(bucket_name).blob(name)
        blob.cache_control = "no-store"
        try:
            blob.upload_from_string(
                data, content_type="application/json", if_generation_match=token
            )
        except exceptions.PreconditionFailed:
            return False
        return True
    import os

    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock, os.replace is still atomic
        fcntl = None
    os.makedirs(os.path.dirname(os.path.abspath(uri)), exist_ok=True)
    with open(uri + ".lock", "a") as lock:
        if fcntl is not None:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            try:
                with open(uri, "rb") as handle:
                    current = handle.read()
            except FileNotFoundError:
                current = None
            if current != token:
                return False
            write_bytes(uri, data)
            return True
        finally:
            if fcntl is not None:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


# What a step that only reads embeds.
READ_HELPERS: tuple[Callable, ...] = (gcs_client, split_gcs_uri, local_path, join_uri, read_bytes)
# Everything above: writes and the champion pointer's compare-and-swap too.
HELPERS: tuple[Callable, ...] = (*READ_HELPERS, write_bytes, read_champion, swap_champion)
