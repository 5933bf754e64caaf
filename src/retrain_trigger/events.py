"""Decoding: every event form the design names, turned into one :class:`Trigger`.

Forms:

- Eventarc ``google.cloud.storage.object.v1.*`` CloudEvents (binary or structured);
- Pub/Sub ``google.cloud.pubsub.topic.v1.messagePublished`` CloudEvents, and raw Pub/Sub push
  bodies, carrying a GCS notification (``OBJECT_FINALIZE`` …, ``JSON_API_V1``; ``NONE`` is
  refused), a Cloud Build status message (the Cloud Build topic) or, to the HTTP function only, a
  JSON trigger body;
- the HTTP JSON body ``{"route"?, "kind", "commit_sha", "image_uri", "build_id", "branch",
  "model_uri", "template", "force", "nonce", "dry_run"}``.

Every value a rule uses is validated here, before it can reach a job id, a label or a parameter;
anything malformed raises :class:`~retrain_trigger.errors.InvalidEvent` (or ``PayloadTooLarge``)
with a message naming the field. Fields no rule uses (content type, custom metadata beyond the
loop-guard keys, event ids and times) never refuse an event: whatever Cloud Storage and Pub/Sub
accept is accepted, and only kept out of ids and labels by the sanitising in ``rules``. Each limit
follows a published one:

- object names: 1-1024 bytes of UTF-8, no carriage return or line feed, not ``.`` or ``..``
  (https://cloud.google.com/storage/docs/naming-objects); other control characters are legal;
- bucket names: 3-63 characters, up to 222 with dots (https://cloud.google.com/storage/quotas);
- custom metadata: any number of entries, keys up to 1 KiB, values up to 4 KiB, 8 KiB in all
  (https://cloud.google.com/storage/docs/reference/rpc/google.storage.v1, ``ServiceConstants``):
  bounded here only by ``max_body_bytes``;
- Pub/Sub messages: up to 10 MB of data and 100 attributes (keys up to 256 bytes, values up to
  1024 bytes) (https://cloud.google.com/pubsub/quotas#resource_limits): bounded here by
  ``max_body_bytes``, default 1 MiB, far above any GCS notification or Cloud Build message;
- CloudEvents ids: any non-empty string (https://github.com/cloudevents/spec, ``id``).

Trust: the event entry point takes data events (GCS notifications, Eventarc storage events) from
any topic it is wired to, Cloud Build status messages only from the configured Cloud Build topic,
and never a JSON trigger body (code and model changes go to the authenticated HTTP function).

(Above ~400 lines on purpose: this is the one place untrusted input is read; every field's check
sits next to the published limit it follows, so the whole boundary can be reviewed in one file.)
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from retrain_trigger.constants import BUCKET_NAME, ROUTE_NAME
from retrain_trigger.errors import Forbidden, InvalidEvent, PayloadTooLarge
from retrain_trigger.model import Kind, Trigger

STORAGE_PREFIX = "google.cloud.storage.object.v1."
STORAGE_FINALIZED = STORAGE_PREFIX + "finalized"
PUBSUB_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"

# GCS notification eventType -> the Eventarc name for the same thing.
NOTIFICATION_TYPES = {
    "OBJECT_FINALIZE": "finalized",
    "OBJECT_DELETE": "deleted",
    "OBJECT_ARCHIVE": "archived",
    "OBJECT_METADATA_UPDATE": "metadataUpdated",
}

MAX_JSON_DEPTH = 32

_DIGITS = re.compile(r"^[0-9]{1,20}$")
_SHA = re.compile(r"^[0-9a-f]{7,64}$")
_IMAGE = re.compile(
    r"^[a-z0-9][a-z0-9.-]*(:[0-9]{1,5})?(/[a-z0-9][a-z0-9._-]*)+"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$"
)
_BUILD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
# Git refuses spaces, control characters and ~^:?*[\ in ref names (git check-ref-format).
_BRANCH = re.compile(r"^[^\x00-\x20\x7f~^:?*\[\\]{1,255}$")
_MODEL_URI = re.compile(r"^(gs://|https://|projects/)[^\s\x00-\x1f\x7f]{1,1020}$")
_TEMPLATE = re.compile(r"^(gs://|https://)[^\s\x00-\x1f\x7f]{1,1020}$")
_NONCE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_EVENT_ID = re.compile(r"^[\x21-\x7e]{1,256}$")
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")
# Cloud Storage refuses only these two in object names; other control characters are legal.
_LINE_BREAK = re.compile(r"[\r\n]")
_UNPRINTABLE = re.compile(r"[^\x21-\x7e]")
# ``projects/<project>/topics/<topic>`` inside a CloudEvent source or a push URL's path.
_TOPIC_PATH = re.compile(r"projects/([^/?#]+)/topics/([^/?#]+)")

NONCE_TEXT = "1-64 characters of A-Z a-z 0-9 . _ -"

HTTP_FIELDS = frozenset(
    {
        "route",
        "kind",
        "commit_sha",
        "image_uri",
        "build_id",
        "branch",
        "model_uri",
        "template",
        "force",
        "nonce",
        "dry_run",
    }
)


# --------------------------------------------------------------------------- field checks


def _text(value: Any, name: str, limit: int = 1024, *, numbers: bool = False) -> str:
    if value is None:
        return ""
    if (
        isinstance(value, bool)
        or not isinstance(value, str | int)
        or (isinstance(value, int) and not numbers)
    ):
        raise InvalidEvent(f"{name} must be a string, got {type(value).__name__}")
    text = str(value)
    if len(text) > limit:
        raise InvalidEvent(f"{name} is longer than {limit} characters")
    return text


def _match(value: Any, name: str, pattern: re.Pattern[str], what: str, limit: int = 1024) -> str:
    text = _text(value, name, limit)
    if text and not pattern.match(text):
        raise InvalidEvent(f"{name} is not {what}: {_show(text)}")
    return text


def _show(text: str) -> str:
    shown = text if len(text) <= 60 else text[:57] + "..."
    return json.dumps(shown, ensure_ascii=True)


def check_bucket(value: Any) -> str:
    bucket = _match(value, "bucket", BUCKET_NAME, "a valid bucket name", 222)
    if not bucket:
        raise InvalidEvent("bucket is missing")
    return bucket


def check_object(value: Any) -> str:
    """An object name as Cloud Storage allows it: 1-1024 bytes of UTF-8 without CR or LF."""
    name = _text(value, "object name", 4096)
    if not name:
        raise InvalidEvent("object name is missing")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidEvent("object name is not valid UTF-8") from None
    if size > 1024:
        raise InvalidEvent("object name is longer than 1024 bytes")
    if _LINE_BREAK.search(name):
        raise InvalidEvent(f"object name contains a carriage return or line feed: {_show(name)}")
    if name in (".", ".."):
        raise InvalidEvent(f"object name {name!r} is not allowed by Cloud Storage")
    return name


def check_generation(value: Any, name: str = "generation") -> str:
    text = _text(value, name, 20, numbers=True)
    if not text:
        raise InvalidEvent(f"{name} is missing")
    if not _DIGITS.match(text) or int(text) <= 0:
        raise InvalidEvent(f"{name} must be a positive whole number, got {_show(text)}")
    return str(int(text))


def _size(value: Any) -> int | None:
    if value is None or value == "":
        return None
    text = _text(value, "size", 20, numbers=True)
    if not _DIGITS.match(text):
        raise InvalidEvent(f"size must be a whole number, got {_show(text)}")
    return int(text)


def _event_id(value: Any) -> str:
    """The delivery's id, for logs and the ``{event_id}`` field; never a reason to refuse.

    CloudEvents allow any non-empty string, so characters outside printable ASCII become ``_``.
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        return ""
    text = str(value)
    if _EVENT_ID.match(text):
        return text
    return _UNPRINTABLE.sub("_", text[:256])


def _event_time(value: Any) -> str:
    """An RFC 3339 time, or ``""``: no rule uses it, so a malformed one is dropped, not refused."""
    if isinstance(value, str) and len(value) <= 64 and _TIME.match(value):
        return value
    return ""


def _loose_text(value: Any, limit: int) -> str:
    """A field no rule uses (``contentType``): kept for the logs, cut to ``limit`` characters."""
    return value[:limit] if isinstance(value, str) else ""


def _bool(value: Any, name: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidEvent(f"{name} must be true or false, got {_show(str(value))}")


def _metadata(value: Any) -> dict[str, str]:
    """Custom metadata: any number of entries of any length (Cloud Storage caps the total at
    8 KiB, ``max_body_bytes`` caps the event). Only the loop guard reads it."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidEvent("metadata must be an object")
    return {
        str(key): item if isinstance(item, str) else json.dumps(item) for key, item in value.items()
    }


def delivery_nonce(prefix: str, identity: str) -> str:
    """A ``force`` nonce from a delivery's identity (a Pub/Sub message id, a signature time):
    the same identity always gives the same nonce, so redeliveries and replays map to one run."""
    if not identity:
        return ""
    nonce = f"{prefix}-{identity}"
    if _NONCE.match(nonce):
        return nonce
    return f"{prefix}-{hashlib.sha256(identity.encode('utf-8', 'surrogatepass')).hexdigest()[:32]}"


def check_template_uri(value: Any, name: str = "template") -> str:
    """A ``gs://`` or ``https://`` URI in canonical form, so that prefix checks mean what they say.

    Refused: percent-encoding, backslashes, empty (``//``) or dot (``.``, ``..``) path segments,
    a query or fragment, user info or a port, and upper-case hosts: each could make a URI that
    looks as if it lay under an allowed prefix name something else once a server normalises it.
    """
    text = _match(value, name, _TEMPLATE, "a gs:// or https:// URI")
    if not text:
        return text
    problem = uri_problem(text)
    if problem:
        raise InvalidEvent(f"{name} {problem}: {_show(text)}")
    return text


def uri_problem(uri: str) -> str:
    """Why a ``gs://`` / ``https://`` URI is not canonical, or ``""``."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in ("gs", "https"):
        return "must start with gs:// or https://"
    for char, what in (("%", "percent-encoding"), ("\\", "a backslash"), ("?", "a query")):
        if char in rest:
            return f"must not contain {what}"
    if "#" in rest:
        return "must not contain a fragment"
    host, _, path = rest.partition("/")
    if not host or host != host.lower() or "@" in host or ":" in host:
        return "must name a lower-case host or bucket without user or port"
    segments = path.split("/")
    inner = segments[:-1] if path.endswith("/") else segments
    if path and any(seg in ("", ".", "..") for seg in inner):
        return "must not contain empty, '.' or '..' path segments"
    return ""


# --------------------------------------------------------------------------- JSON


def parse_json(raw: bytes | str, *, what: str, max_bytes: int) -> Any:
    """Parses a JSON body with a size and nesting limit."""
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"{what} is larger than {max_bytes} bytes")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidEvent(f"{what} is not UTF-8 text") from None
    if nesting_depth(raw) > MAX_JSON_DEPTH:
        raise InvalidEvent(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidEvent(f"{what} is not valid JSON: {str(exc)[:120]}") from None


def nesting_depth(text: str) -> int:
    """Upper bound of the JSON nesting depth, counted outside strings."""
    if "[" not in text and "{" not in text:
        return 0
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_JSON_DEPTH:
                    return deepest
        elif char in "]}":
            depth -= 1
    return deepest


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidEvent(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


# --------------------------------------------------------------------------- GCS


def trigger_from_gcs_object(
    resource: Mapping[str, Any],
    *,
    source: str,
    event_type: str,
    event_id: Any = "",
    event_time: Any = "",
) -> Trigger:
    """A Trigger from a GCS object resource (``JSON_API_V1`` / Eventarc storage data)."""
    return Trigger(
        kind=Kind.DATA,
        source=source,
        event_type=event_type,
        event_id=_event_id(event_id),
        event_time=_event_time(event_time),
        bucket=check_bucket(resource.get("bucket")),
        object=check_object(resource.get("name")),
        generation=check_generation(resource.get("generation")),
        size=_size(resource.get("size")),
        content_type=_loose_text(resource.get("contentType"), 256),
        metadata=_metadata(resource.get("metadata")),
    )


PAYLOAD_NONE_REFUSED = (
    "GCS notification with payloadFormat NONE carries no object resource, so min_size and the "
    "metadata loop guard cannot apply; create the bucket's notification with payload format "
    "JSON_API_V1 (gcloud storage buckets notifications create --payload-format=json)"
)


def decode_gcs_notification(
    attributes: Mapping[str, Any],
    data: bytes,
    *,
    source: str,
    event_id: Any = "",
    event_time: Any = "",
    max_bytes: int = 1 << 20,
) -> Trigger:
    """A GCS Pub/Sub notification: attributes plus the object resource as the payload.

    Only ``payloadFormat: JSON_API_V1`` is taken: ``NONE`` notifications carry no size or
    metadata, so the rules that need them (``min_size``, the metadata loop guard) could not
    apply (https://cloud.google.com/storage/docs/pubsub-notifications). An
    ``eventType`` this version does not know is kept, and the rules skip it as not a finalize.
    """
    notification = _text(attributes.get("eventType"), "eventType", 4096)
    if not notification:
        raise InvalidEvent("eventType is missing")
    notification = _UNPRINTABLE.sub("_", notification[:64])
    payload_format = _text(attributes.get("payloadFormat", "JSON_API_V1"), "payloadFormat", 1024)
    bucket = check_bucket(attributes.get("bucketId"))
    name = check_object(attributes.get("objectId"))
    generation = check_generation(attributes.get("objectGeneration"), "objectGeneration")
    if payload_format == "NONE":
        raise InvalidEvent(PAYLOAD_NONE_REFUSED, code="payload_format_none")
    if payload_format != "JSON_API_V1":
        raise InvalidEvent(f"unsupported payloadFormat {_show(payload_format)}")
    resource = _object(
        parse_json(data, what="notification payload", max_bytes=max_bytes),
        "notification payload",
    )
    if resource.get("bucket") not in (None, bucket) or resource.get("name") not in (None, name):
        raise InvalidEvent("notification payload names another object than its attributes")
    if str(resource.get("generation", generation)) != generation:
        raise InvalidEvent("notification payload generation differs from objectGeneration")
    resource = {**resource, "bucket": bucket, "name": name, "generation": generation}
    return trigger_from_gcs_object(
        resource,
        source=source,
        event_type=notification,
        event_id=event_id,
        event_time=event_time or attributes.get("eventTime", ""),
    )


# --------------------------------------------------------------------------- Cloud Build


def decode_cloud_build(
    attributes: Mapping[str, Any],
    data: bytes,
    *,
    source: str,
    event_id: Any = "",
    event_time: Any = "",
    max_bytes: int = 1 << 20,
) -> Trigger:
    """A Cloud Build status message (topic ``cloud-builds``). Only ``SUCCESS`` builds trigger."""
    build = _object(
        parse_json(data, what="Cloud Build message", max_bytes=max_bytes), "Cloud Build message"
    )
    status = _text(build.get("status") or attributes.get("status"), "status", 32)
    build_id = _match(
        build.get("id") or attributes.get("buildId"), "build id", _BUILD_ID, "a build id", 128
    )
    subs = build.get("substitutions") or {}
    if not isinstance(subs, Mapping):
        raise InvalidEvent("substitutions must be an object")
    provenance = (build.get("sourceProvenance") or {}).get("resolvedRepoSource") or {}
    commit = subs.get("COMMIT_SHA") or (
        provenance.get("commitSha") if isinstance(provenance, Mapping) else ""
    )
    image = ""
    results = build.get("results") or {}
    images = results.get("images") if isinstance(results, Mapping) else None
    if isinstance(images, list) and images and isinstance(images[0], Mapping):
        name, digest = images[0].get("name", ""), images[0].get("digest", "")
        if isinstance(name, str) and isinstance(digest, str) and name:
            image = f"{_untagged(name)}@{digest}" if digest else name
    elif isinstance(build.get("images"), list) and build["images"]:
        image = build["images"][0]
    return Trigger(
        kind=Kind.CODE,
        source=source,
        event_type=status or "UNKNOWN",
        event_id=_event_id(event_id),
        event_time=_event_time(event_time or build.get("finishTime") or ""),
        commit_sha=_match(str(commit or "").lower(), "commit_sha", _SHA, "a hex commit sha", 64),
        image_uri=_match(image, "image_uri", _IMAGE, "an image reference", 512),
        build_id=build_id,
        # No rule reads the branch: one Git allows but this check does not is dropped, not refused.
        branch=_optional(subs.get("BRANCH_NAME"), _BRANCH),
    )


def _optional(value: Any, pattern: re.Pattern[str]) -> str:
    return value if isinstance(value, str) and pattern.match(value) else ""


def _untagged(image: str) -> str:
    """``host/repo/name:tag@digest`` -> ``host/repo/name`` (a digest pins the image by itself)."""
    image = image.split("@", 1)[0]
    head, _, last = image.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else image


# --------------------------------------------------------------------------- HTTP body


def decode_trigger_body(
    body: Any,
    *,
    source: str,
    event_id: str = "",
    event_time: str = "",
    delivery_nonce: str = "",
) -> Trigger:
    """The JSON trigger body sent over HTTP (or in a Pub/Sub push to the HTTP function).

    ``delivery_nonce`` is the nonce a ``force`` without ``nonce`` gets: one derived from the
    delivery's identity (see :func:`delivery_nonce`), so that retries map to one run.
    """
    body = _object(body, "request body")
    unknown = sorted(str(k)[:40] for k in body if k not in HTTP_FIELDS)
    if unknown:
        raise InvalidEvent(f"unknown field(s): {', '.join(unknown)}")
    kind_text = _text(body.get("kind"), "kind", 16)
    if not kind_text:
        if body.get("model_uri"):
            kind_text = "model"
        elif body.get("commit_sha") or body.get("image_uri"):
            kind_text = "code"
        else:
            raise InvalidEvent("kind is missing (code or model)")
    if kind_text not in ("code", "model"):
        raise InvalidEvent(f"kind must be code or model, got {_show(kind_text)}")
    kind = Kind(kind_text)
    trigger = Trigger(
        kind=kind,
        source=source,
        event_type=f"http.{kind_text}",
        event_id=_event_id(event_id),
        event_time=_event_time(event_time),
        route=_match(body.get("route"), "route", ROUTE_NAME, "a route name", 30),
        commit_sha=_match(
            _lower(body.get("commit_sha")), "commit_sha", _SHA, "a hex commit sha", 64
        ),
        image_uri=_match(body.get("image_uri"), "image_uri", _IMAGE, "an image reference", 512),
        build_id=_match(body.get("build_id"), "build_id", _BUILD_ID, "a build id", 128),
        branch=_match(body.get("branch"), "branch", _BRANCH, "a branch name", 255),
        model_uri=_match(
            body.get("model_uri"), "model_uri", _MODEL_URI, "a gs://, https:// or projects/ URI"
        ),
        template=check_template_uri(body.get("template")),
        force=_bool(body.get("force"), "force"),
        nonce=_match(body.get("nonce"), "nonce", _NONCE, NONCE_TEXT, 64),
        dry_run=_bool(body.get("dry_run"), "dry_run"),
    )
    if kind is Kind.CODE and not (trigger.commit_sha or trigger.image_uri):
        raise InvalidEvent("a code trigger needs commit_sha or image_uri")
    if kind is Kind.MODEL and not trigger.model_uri:
        raise InvalidEvent("a model trigger needs model_uri")
    if ".." in trigger.model_uri.split("/"):
        raise InvalidEvent("model_uri must not contain '..' path segments")
    if trigger.force and not trigger.nonce and delivery_nonce:
        trigger = dataclasses.replace(trigger, nonce=delivery_nonce)
    return trigger


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


# --------------------------------------------------------------------------- Pub/Sub


DEFAULT_CLOUD_BUILD_TOPIC = "cloud-builds"


def topic_of(text: str) -> str:
    """``projects/<p>/topics/<t>`` named in a CloudEvent source or a push URL's path, or ``""``."""
    match = _TOPIC_PATH.search(text or "")
    return f"projects/{match.group(1)}/topics/{match.group(2)}" if match else ""


def is_cloud_build_topic(topic: str, setting: str) -> bool:
    """Whether ``topic`` (a full topic name) is the configured Cloud Build topic: ``setting`` is a
    topic id (``cloud-builds``, any project) or a full ``projects/<p>/topics/<t>`` name."""
    if not topic or not setting:
        return False
    if "/" in setting:
        return topic == setting
    return topic.rsplit("/", 1)[-1] == setting


def decode_pubsub_message(
    message: Any,
    *,
    source: str,
    event_id: Any = "",
    event_time: Any = "",
    max_bytes: int = 1 << 20,
    topic: str = "",
    trusted: bool = False,
    cloud_build_topic: str = DEFAULT_CLOUD_BUILD_TOPIC,
) -> Trigger:
    """One Pub/Sub message (``{"data": base64, "attributes": {...}, "messageId", "publishTime"}``).

    A publisher controls only ``data`` and ``attributes``; ``topic`` (from the CloudEvent source
    or the push URL) is set by the platform. Unless ``trusted`` (the authenticated HTTP
    function), a Cloud Build status message is taken only from ``cloud_build_topic`` and a JSON
    trigger body not at all: otherwise anyone allowed to publish to the data topic could start
    code and model runs past the HTTP function's ``allowed_invokers``.
    """
    message = _object(message, "Pub/Sub message")
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, Mapping):
        raise InvalidEvent("Pub/Sub attributes must be an object")
    encoded = message.get("data") or ""
    if not isinstance(encoded, str):
        raise InvalidEvent("Pub/Sub data must be a base64 string")
    if len(encoded) > max_bytes * 4 // 3 + 4:
        raise PayloadTooLarge(f"Pub/Sub data is larger than {max_bytes} bytes")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidEvent("Pub/Sub data is not valid base64") from None
    event_id = event_id or message.get("messageId") or message.get("message_id") or ""
    event_time = event_time or message.get("publishTime") or message.get("publish_time") or ""
    where = f"topic {topic}" if topic else "a push whose URL names no topic"
    if "bucketId" in attributes or "objectId" in attributes:
        return decode_gcs_notification(
            attributes,
            data,
            source=source,
            event_id=event_id,
            event_time=event_time,
            max_bytes=max_bytes,
        )
    if "buildId" in attributes:
        if not trusted and not is_cloud_build_topic(topic, cloud_build_topic):
            raise Forbidden(
                f"Cloud Build status message from {where} refused: the event function takes "
                f"them only from the Cloud Build topic ({cloud_build_topic})",
                code="untrusted_source",
            )
        return decode_cloud_build(
            attributes,
            data,
            source=source,
            event_id=event_id,
            event_time=event_time,
            max_bytes=max_bytes,
        )
    if not trusted:
        raise Forbidden(
            f"message from {where} is neither a GCS notification nor a Cloud Build status "
            "message: the event function takes data events only; send code and model changes "
            "to the HTTP function",
            code="untrusted_source",
        )
    body = parse_json(data, what="Pub/Sub message data", max_bytes=max_bytes)
    identity = (
        event_id if isinstance(event_id, str | int) and not isinstance(event_id, bool) else ""
    )
    return decode_trigger_body(
        body,
        source=source,
        event_id=_event_id(event_id),
        event_time=_event_time(event_time),
        delivery_nonce=delivery_nonce("pubsub", str(identity)),
    )


def decode_pubsub_push(
    body: Any,
    *,
    max_bytes: int = 1 << 20,
    topic: str = "",
    trusted: bool = False,
    cloud_build_topic: str = DEFAULT_CLOUD_BUILD_TOPIC,
) -> Trigger:
    """A raw Pub/Sub push body: ``{"message": {...}, "subscription": "projects/…"}``.

    ``topic`` is the topic the push URL names (``…/projects/<p>/topics/<t>``), if any.
    """
    body = _object(body, "push body")
    subscription = _loose_text(body.get("subscription"), 512)
    if topic:
        source = f"pubsub:{topic.rsplit('/', 1)[-1]}"
    else:
        source = f"pubsub-push:{subscription}" if subscription else "pubsub-push"
    return decode_pubsub_message(
        body.get("message"),
        source=source,
        max_bytes=max_bytes,
        topic=topic,
        trusted=trusted,
        cloud_build_topic=cloud_build_topic,
    )


# --------------------------------------------------------------------------- CloudEvents


def decode_cloud_event(
    event: Any, *, max_bytes: int = 1 << 20, cloud_build_topic: str = DEFAULT_CLOUD_BUILD_TOPIC
) -> Trigger:
    """Any CloudEvent the event entry point receives (an ``cloudevents`` CloudEvent).

    The event entry point is not authenticated beyond the platform's invoker check, so it takes
    data events only, and Cloud Build messages only from ``cloud_build_topic`` (named by the
    CloudEvent ``source``, which Eventarc and functions-framework set, never the publisher).
    """
    try:
        ce_type = str(event["type"])
        ce_source = str(event["source"])
        ce_id = event["id"]
        ce_time = event.get("time") if hasattr(event, "get") else None
    except (KeyError, TypeError):
        raise InvalidEvent("not a CloudEvent: type, source or id is missing") from None
    data = event.data
    if isinstance(data, bytes | bytearray | str):
        data = parse_json(
            bytes(data) if not isinstance(data, str) else data,
            what="event data",
            max_bytes=max_bytes,
        )
    elif data is not None:
        try:
            size = len(json.dumps(data, default=str))
        except (RecursionError, ValueError):  # nested too deeply, or circular
            raise InvalidEvent("event data is nested too deeply to be JSON") from None
        if size > max_bytes:
            raise PayloadTooLarge(f"event data is larger than {max_bytes} bytes")
    if ce_type.startswith(STORAGE_PREFIX):
        resource = _object(data, "storage event data")
        return trigger_from_gcs_object(
            resource,
            source="eventarc",
            event_type=ce_type,
            event_id=ce_id,
            event_time=ce_time or "",
        )
    if ce_type == PUBSUB_PUBLISHED:
        payload = _object(data, "Pub/Sub event data")
        topic = topic_of(ce_source)
        return decode_pubsub_message(
            payload.get("message"),
            source=f"pubsub:{topic.rsplit('/', 1)[-1]}" if topic else "pubsub",
            event_id=ce_id,
            event_time=ce_time or "",
            max_bytes=max_bytes,
            topic=topic,
            cloud_build_topic=cloud_build_topic,
        )
    raise InvalidEvent(f"unsupported CloudEvent type {_show(ce_type)}")
