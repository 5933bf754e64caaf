"""Replays: seek a Pub/Sub subscription back in time, or backfill a bucket.

- :func:`seek` asks Pub/Sub to redeliver every message published to a subscription since a time
  (the subscription needs ``retain_acked_messages`` for already acknowledged ones). Works against
  real Pub/Sub and against the emulator (``PUBSUB_EMULATOR_HOST``).
- :func:`backfill_messages` makes one GCS notification (``OBJECT_FINALIZE``, ``JSON_API_V1``) per
  existing object under a prefix, exactly as Cloud Storage would have, and :func:`publish`
  publishes them. :func:`plan_backfill`
  decides, with the core's own rules and run keys, which runs those messages would start.

Both are safe to repeat: every message maps to the run key of its object version, so the runs it
would start already exist and the answer is ``duplicate``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from retrain_trigger.errors import RejectedError, RetrainError
from retrain_trigger_dev.localstack import objects

PUBLISH_TIMEOUT = 60.0
SEEK_TIMEOUT = 60.0

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)$")
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
_RESOURCE = re.compile(r"^projects/[^/]+/(topics|subscriptions)/[^/]+$")


class ReplayError(RetrainError):
    """A replay could not be done as asked (bad time, unknown project, publish failed)."""


def parse_since(text: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """An aware UTC time from RFC 3339 / ISO 8601 (``2026-11-26T00:00Z``, ``2026-11-26``) or an
    age (``90s``, ``15m``, ``2h``, ``1d``, ``1w``) counted back from now."""
    value = text.strip()
    now = now or dt.datetime.now(dt.UTC)
    match = _RELATIVE.match(value.lower())
    if match:
        return now - dt.timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    iso = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        when = dt.datetime.fromisoformat(iso)
    except ValueError:
        raise ReplayError(
            f"--since {text!r} is neither an RFC 3339 time (2026-11-26T00:00Z) nor an age (15m, 2h, 1d)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    when = when.astimezone(dt.UTC)
    if when > now + dt.timedelta(minutes=5):
        raise ReplayError(f"--since {text!r} is in the future")
    return when


def default_project(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    for name in (
        "PUBSUB_PROJECT_ID",
        "GOOGLE_CLOUD_PROJECT",
        "GCLOUD_PROJECT",
        "CLOUDSDK_CORE_PROJECT",
    ):
        if env.get(name, "").strip():
            return env[name].strip()
    return ""


def resource_path(kind: str, name: str, project: str = "") -> str:
    """``projects/P/<kind>/<name>`` from a full path or a short name plus a project."""
    name = name.strip()
    if _RESOURCE.match(name):
        if f"/{kind}/" not in name:
            raise ReplayError(f"{name!r} is not a {kind[:-1]} path")
        return name
    if "/" in name or not name:
        raise ReplayError(
            f"{name!r} is neither a {kind[:-1]} name nor projects/PROJECT/{kind}/NAME"
        )
    project = project or default_project()
    if not project:
        raise ReplayError(
            f"{kind[:-1]} {name!r} needs a project: pass --project, set GOOGLE_CLOUD_PROJECT, "
            f"or give projects/PROJECT/{kind}/{name}"
        )
    return f"projects/{project}/{kind}/{name}"


def _emulated_credentials() -> dict[str, Any]:
    if os.environ.get("PUBSUB_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return {"credentials": AnonymousCredentials()}
    return {}


def subscriber_client() -> Any:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    return pubsub_v1.SubscriberClient(**_emulated_credentials())


def publisher_client() -> Any:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    return pubsub_v1.PublisherClient(**_emulated_credentials())


def seek(
    subscription: str, since: dt.datetime, *, client: Any = None, timeout: float = SEEK_TIMEOUT
) -> None:
    """Redelivers the subscription's messages published at or after ``since``."""
    from google.protobuf import timestamp_pb2

    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(since.astimezone(dt.UTC).replace(tzinfo=None))
    subscriber = client or subscriber_client()
    try:
        subscriber.seek(request={"subscription": subscription, "time": stamp}, timeout=timeout)
    except Exception as exc:
        raise ReplayError(f"seek {subscription} to {since.isoformat()} failed: {exc}") from exc


@dataclass(frozen=True)
class BackfillMessage:
    resource: Mapping[str, Any]
    data: bytes
    attributes: Mapping[str, str]

    @property
    def key(self) -> str:
        return objects.object_key(self.resource)


def backfill_messages(resources: Iterable[Mapping[str, Any]]) -> list[BackfillMessage]:
    """One GCS notification per object resource; folder placeholders are left out."""
    out = []
    for resource in resources:
        if str(resource.get("name", "")).endswith("/"):
            continue
        data, attributes = objects.notification_message(resource)
        out.append(BackfillMessage(resource=resource, data=data, attributes=attributes))
    return out


@dataclass
class Planned:
    key: str
    outcome: str  # "run", "batch", "skip" or "reject"
    reason: str = ""
    run_key: str = ""
    job_id: str = ""
    route: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in ("", {}, None)}


def plan_backfill(config: Any, messages: Iterable[BackfillMessage]) -> list[Planned]:
    """What each message would start, by the core's rules (``rules.plan``); nothing is published.

    A template that cannot be read or does not fit its route raises ``TemplateError``."""
    from retrain_trigger import events, rules
    from retrain_trigger.spec import TemplateCache

    templates = TemplateCache.for_config(config)
    out: list[Planned] = []
    for message in messages:
        try:
            trigger = events.decode_gcs_notification(
                message.attributes, message.data, source="replay"
            )
            planned = rules.plan(config, trigger, templates)
        except RejectedError as exc:
            out.append(Planned(key=message.key, outcome="reject", reason=str(exc)))
            continue
        if isinstance(planned, rules.Batch):
            out.append(
                Planned(
                    key=message.key,
                    outcome="batch",
                    reason="joins the route's batch window; a flush starts the run",
                    route=planned.route,
                    run_key=planned.run_key,
                )
            )
        elif isinstance(planned, rules.Skip):
            out.append(
                Planned(
                    key=message.key,
                    outcome="skip",
                    reason=planned.reason,
                    route=planned.route,
                    run_key=planned.run_key,
                )
            )
        else:
            out.append(
                Planned(
                    key=message.key,
                    outcome="run",
                    run_key=planned.run_key,
                    job_id=planned.job_id,
                    route=planned.route,
                    parameters=dict(planned.parameter_values),
                )
            )
    return out


def publish(
    topic: str,
    messages: Iterable[BackfillMessage],
    *,
    client: Any = None,
    timeout: float = PUBLISH_TIMEOUT,
) -> list[str]:
    """Publishes the messages and waits for every one; returns their message ids."""
    publisher = client or publisher_client()
    futures = [publisher.publish(topic, m.data, **dict(m.attributes)) for m in messages]
    ids = []
    for future in futures:
        try:
            ids.append(str(future.result(timeout=timeout)))
        except Exception as exc:
            raise ReplayError(
                f"publishing to {topic} failed after {len(ids)} message(s): {exc}"
            ) from exc
    return ids
