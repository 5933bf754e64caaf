"""The three values that flow through the core: Trigger -> RunRequest -> Decision.

All are frozen dataclasses; they are created by the decoders (``events``), the rules
(``rules``) and the service (``service``, after the backend answered) respectively, and
serialised with ``to_dict`` (a Decision with ``decisions.decision_dict``).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


class Kind(enum.StrEnum):
    DATA = "data"
    CODE = "code"
    MODEL = "model"


class Outcome(enum.StrEnum):
    SUBMITTED = "submitted"
    DUPLICATE = "duplicate"
    # Accepted into a batch window: the run starts when the window closes (not a skip).
    BATCHED = "batched"
    SKIPPED = "skipped"
    REJECTED = "rejected"
    FAILED = "failed"


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


# Cloud Storage caps an object's custom metadata at 8 KiB; a log line shows at most that much.
LOGGED_METADATA_CHARS = 8192


def _bounded(metadata: Mapping[str, str]) -> dict[str, str]:
    """Metadata for a log line: entries up to 8 KiB of keys and values, then a count of the rest."""
    out: dict[str, str] = {}
    used = 0
    for key, value in metadata.items():
        used += len(key) + len(value)
        if used > LOGGED_METADATA_CHARS:
            out["…"] = f"{len(metadata) - len(out)} more entries not shown"
            break
        out[key] = value
    return out


@dataclass(frozen=True)
class Trigger:
    """What happened, normalised from any event form.

    ``source`` tells how it arrived (``eventarc``, ``pubsub``, ``pubsub-push``, ``cloudbuild``,
    ``http``, ``replay``); ``event_type`` keeps the platform's own name for it
    (``OBJECT_FINALIZE``, ``google.cloud.storage.object.v1.finalized``, ``SUCCESS`` ...).
    """

    kind: Kind
    source: str
    event_id: str = ""
    event_time: str = ""
    event_type: str = ""
    # data
    bucket: str = ""
    object: str = ""
    generation: str = ""
    size: int | None = None
    content_type: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    # code
    commit_sha: str = ""
    image_uri: str = ""
    build_id: str = ""
    branch: str = ""
    # model
    model_uri: str = ""
    # any kind
    route: str = ""
    template: str = ""
    force: bool = False
    nonce: str = ""
    dry_run: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata", _frozen(self.metadata))

    @property
    def gcs_uri(self) -> str:
        return f"gs://{self.bucket}/{self.object}" if self.bucket else ""

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["kind"] = str(self.kind)
        out["metadata"] = _bounded(self.metadata)
        return {k: v for k, v in out.items() if v not in ("", None, {}, False)}


@dataclass(frozen=True)
class RunRequest:
    """What to start: everything a backend needs to create one PipelineJob."""

    route: str
    run_key: str
    job_id: str
    display_name: str
    template: str
    pipeline_root: str
    parameter_values: Mapping[str, Any]
    labels: Mapping[str, str]
    service_account: str = ""
    network: str = ""
    encryption_key: str = ""
    project: str = ""
    region: str = ""
    trigger: Trigger | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "parameter_values", _frozen(self.parameter_values))
        object.__setattr__(self, "labels", _frozen(self.labels))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "route": self.route,
            "run_key": self.run_key,
            "job_id": self.job_id,
            "display_name": self.display_name,
            "template": self.template,
            "pipeline_root": self.pipeline_root,
            "parameter_values": dict(self.parameter_values),
            "labels": dict(self.labels),
        }
        for name in ("service_account", "network", "encryption_key", "project", "region"):
            if value := getattr(self, name):
                out[name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunRequest:
        """The inverse of ``to_dict`` (the trigger is not kept)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"trigger"}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class RunHandle:
    """What a backend answers to ``submit``: the job's full resource name and whether it is new.

    ``created`` is False when a job with the same id already existed (a duplicate delivery).
    """

    job_id: str
    job_name: str
    state: str = ""
    created: bool = True


@dataclass(frozen=True)
class Decision:
    """What was done with one event, and why. Exactly one per event."""

    outcome: Outcome
    reason: str = ""
    route: str = ""
    run_key: str = ""
    job_id: str = ""
    job_name: str = ""
    retryable: bool = False
    status: int = 200
    code: str = ""
    trigger: Trigger | None = None
    request: RunRequest | None = None
    latency_ms: float = 0.0
    window_id: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome in (
            Outcome.SUBMITTED,
            Outcome.DUPLICATE,
            Outcome.BATCHED,
            Outcome.SKIPPED,
        )

    @property
    def code_field(self) -> str:
        """``error`` for rejected and failed decisions, ``detail`` for the others."""
        return "error" if self.outcome in (Outcome.REJECTED, Outcome.FAILED) else "detail"
