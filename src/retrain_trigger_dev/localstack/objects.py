"""GCS object resources, and the two event forms built from them.

- :func:`storage_cloud_event`: the Eventarc ``google.cloud.storage.object.v1.finalized``
  CloudEvent for an object (what the bucket poller delivers);
- :func:`notification_message`: the GCS Pub/Sub notification for it (``OBJECT_FINALIZE``,
  ``JSON_API_V1``), what a backfill publishes.

Both carry the object's JSON API resource, as the platform's own events do. The CloudEvent id
is derived from the object's name and generation, so delivering it twice is a redelivery.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudevents.http import CloudEvent

FINALIZED = "google.cloud.storage.object.v1.finalized"
OBJECT_FINALIZE = "OBJECT_FINALIZE"
JSON_API_V1 = "JSON_API_V1"


def _rfc3339(value: Any) -> str:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    return str(value or "")


def blob_resource(blob: Any) -> dict[str, Any]:
    """The JSON API resource (``storage#object``) of a ``google.cloud.storage.Blob``.

    Built from the blob's public attributes; values are strings where the JSON API has strings.
    """
    bucket = blob.bucket.name
    generation = str(blob.generation or "")
    resource: dict[str, Any] = {
        "kind": "storage#object",
        "id": f"{bucket}/{blob.name}/{generation}",
        "name": blob.name,
        "bucket": bucket,
        "generation": generation,
        "metageneration": str(blob.metageneration or ""),
        "contentType": blob.content_type or "",
        "timeCreated": _rfc3339(blob.time_created),
        "updated": _rfc3339(blob.updated),
        "storageClass": blob.storage_class or "",
        "size": str(blob.size if blob.size is not None else ""),
        "md5Hash": blob.md5_hash or "",
        "crc32c": blob.crc32c or "",
        "etag": blob.etag or "",
    }
    if blob.metadata:
        resource["metadata"] = dict(blob.metadata)
    return {k: v for k, v in resource.items() if v not in ("", None)}


def iter_objects(bucket: str, prefix: str = "", *, client: Any = None) -> Iterator[dict[str, Any]]:
    """The live objects under a prefix, as JSON API resources, in name order."""
    from retrain_trigger import gcs

    storage = client or gcs.client()
    for blob in storage.list_blobs(bucket, prefix=prefix or None, timeout=gcs.READ_TIMEOUT):
        yield blob_resource(blob)


def object_key(resource: Mapping[str, Any]) -> str:
    """``gs://bucket/name#generation``: one object version."""
    return f"gs://{resource['bucket']}/{resource['name']}#{resource.get('generation', '')}"


def event_id(resource: Mapping[str, Any]) -> str:
    return hashlib.sha256(object_key(resource).encode("utf-8", "surrogatepass")).hexdigest()[:32]


def event_time(resource: Mapping[str, Any]) -> str:
    return str(
        resource.get("updated") or resource.get("timeCreated") or _rfc3339(dt.datetime.now(dt.UTC))
    )


def storage_cloud_event(resource: Mapping[str, Any]) -> CloudEvent:
    """The Eventarc CloudEvent announcing that this object version was finalized."""
    from cloudevents.http import CloudEvent

    attributes = {
        "specversion": "1.0",
        "type": FINALIZED,
        "source": f"//storage.googleapis.com/projects/_/buckets/{resource['bucket']}",
        "subject": f"objects/{resource['name']}",
        "id": event_id(resource),
        "time": event_time(resource),
        "datacontenttype": "application/json",
    }
    return CloudEvent(attributes, dict(resource))


def notification_message(resource: Mapping[str, Any]) -> tuple[bytes, dict[str, str]]:
    """``(data, attributes)`` of the GCS Pub/Sub notification for this object version."""
    attributes = {
        "bucketId": str(resource["bucket"]),
        "objectId": str(resource["name"]),
        "objectGeneration": str(resource.get("generation", "")),
        "eventType": OBJECT_FINALIZE,
        "payloadFormat": JSON_API_V1,
        "eventTime": event_time(resource),
    }
    data = json.dumps(dict(resource), separators=(",", ":"), sort_keys=True).encode("utf-8")
    return data, attributes


# --------------------------------------------------------------------------- upload

STACK_FILE = "stack.json"


def stack_env(stack_dir: str) -> dict[str, str]:
    """The client environment a running local stack wrote into its folder (empty when none)."""
    import os

    path = os.path.join(stack_dir, STACK_FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    env = data.get("env") if isinstance(data, dict) else None
    if not isinstance(env, dict):
        return {}
    return {str(k): str(v) for k, v in env.items()}


def upload_files(source: str, dest: str, *, stack_dir: str = "") -> list[str]:
    """Copies a file, or every file under a folder (relative names kept), to ``dest``
    (``gs://bucket/prefix/``); returns the URIs written with their generation.

    Without ``STORAGE_EMULATOR_HOST`` set, the emulator of the stack running in ``stack_dir`` is
    used when there is one; otherwise the real Cloud Storage (default credentials).
    """
    import os
    from pathlib import Path

    from retrain_trigger import gcs
    from retrain_trigger.errors import ConfigError

    bucket, _, prefix = dest.removeprefix("gs://").partition("/")
    if not dest.startswith("gs://") or not bucket:
        raise ConfigError(f"{dest!r} is not a gs://bucket/prefix destination")
    root = Path(source)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    if not files:
        raise ConfigError(f"{source} holds no file to upload")
    if not os.environ.get("STORAGE_EMULATOR_HOST") and stack_dir:
        host = stack_env(stack_dir).get("STORAGE_EMULATOR_HOST")
        if host:
            os.environ["STORAGE_EMULATOR_HOST"] = host
    client = gcs.client()
    written = []
    for path in files:
        if root.is_dir():
            name = prefix.rstrip("/") + "/" + path.relative_to(root).as_posix()
        else:
            name = prefix + path.name if (not prefix or prefix.endswith("/")) else prefix
        blob = client.bucket(bucket).blob(name.lstrip("/"))
        blob.upload_from_filename(str(path), timeout=gcs.READ_TIMEOUT)
        written.append(f"gs://{bucket}/{blob.name}#{blob.generation}")
    return written
