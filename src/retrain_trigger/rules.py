"""Routing and rules: Trigger -> RunRequest, or an explicit Skip (or Batch) with its reason.

Pure functions over the configuration: no clock, and no I/O of their own. The RunRequest they
return is complete: its parameter values are already converted to the types the route's compiled
template declares. Templates are looked up through the :class:`TemplateLookup` passed in
(``spec.TemplateCache`` in the service), so how and when a template is read is not decided here.
The run key identifies the change; the
job id is derived from it deterministically, so a second delivery of the same change maps to the
same job id and Vertex refuses to create it twice. A forced rerun adds its nonce to the run key;
``force`` without a nonce is refused (422), since a nonce made up here (the time, say) would turn
every redelivery of the same request into a new run.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from retrain_trigger.config import Config, Route
from retrain_trigger.constants import COMMIT_LABEL, KEY_LABEL, KIND_LABEL, MAX_JOB_ID, ROUTE_LABEL
from retrain_trigger.errors import Forbidden, Unprocessable
from retrain_trigger.events import uri_problem
from retrain_trigger.globs import glob_match, glob_regex  # noqa: F401 (re-exported)
from retrain_trigger.loopguard import skip_reason, under
from retrain_trigger.model import Kind, RunRequest, Trigger

if TYPE_CHECKING:
    from retrain_trigger.spec import PipelineTemplate

FINALIZE_TYPES = frozenset({"OBJECT_FINALIZE", "google.cloud.storage.object.v1.finalized"})

# Names written by upload tools before the final object exists, or by frameworks as scratch.
TEMPORARY_SUFFIXES = (
    ".tmp",
    ".temp",
    ".gstmp",
    ".part",
    ".partial",
    "._COPYING_",
    ".crdownload",
    "~",
)
TEMPORARY_SEGMENTS = ("_temporary", ".staging", "_tmp")
TEMPORARY_PREFIXES = ("gcloud/tmp/", "gsutil/tmp/")


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class TemplateLookup(Protocol):
    """Finds a route's compiled template, checked against the route's parameters."""

    def for_route(self, route: Route, uri: str = "") -> PipelineTemplate:
        """Raises ``TemplateError`` when the template cannot be read or does not fit."""
        ...


@dataclass(frozen=True)
class Batch:
    """The object joins its route's open batch window (``mode: window``); a flush starts the run."""

    route: str
    run_key: str


@dataclass(frozen=True)
class Skip:
    """Nothing to do, and why. Becomes a ``skipped`` Decision."""

    reason: str
    route: str = ""
    run_key: str = ""


# --------------------------------------------------------------------------- globs
# In retrain_trigger.globs (the configuration checks them too); re-exported here.

# --------------------------------------------------------------------------- names


def _slug(text: str, limit: int) -> str:
    text = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return text[:limit].strip("-")


def key_hash(run_key: str, length: int = 16) -> str:
    return hashlib.sha256(run_key.encode("utf-8", "surrogatepass")).hexdigest()[:length]


def job_id_for(route: str, kind: str, readable: str, run_key: str) -> str:
    """``<route>-<kind>-<readable>-<hash>``: ``[a-z0-9-]``, starts with a letter, < 128 chars."""
    head = _slug(f"{route}-{kind}", 40) or "run"
    digest = key_hash(run_key)
    room = MAX_JOB_ID - len(head) - len(digest) - 2
    part = _slug(readable, min(room, 40))
    job_id = f"{head}-{part}-{digest}" if part else f"{head}-{digest}"
    if not job_id[0].isalpha():
        job_id = "r" + job_id
    return job_id[:MAX_JOB_ID]


def label_value(text: str) -> str:
    """Vertex label values: lowercase letters, digits, ``_`` and ``-``, at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-")[:63]


def render(template: str, fields: dict[str, str]) -> str:
    """Substitutes ``{name}`` placeholders (names were validated when the config loaded)."""
    return re.sub(r"{([a-z_]+)}", lambda m: fields.get(m.group(1), m.group(0)), template)


# --------------------------------------------------------------------------- data rules


def temporary_reason(name: str) -> str:
    if name.endswith("/"):
        return "folder placeholder"
    base = posixpath.basename(name)
    if name.startswith(TEMPORARY_PREFIXES):
        return "temporary upload object"
    if base.endswith(TEMPORARY_SUFFIXES) or base.startswith((".", "~$")):
        return "temporary or hidden file name"
    segments = name.split("/")[:-1]
    if any(seg in TEMPORARY_SEGMENTS or seg.startswith(".") for seg in segments):
        return "object in a temporary or hidden folder"
    return ""


def select_data_route(config: Config, trigger: Trigger) -> Route | None:
    for route in config.routes:
        rule = route.data
        if rule is None or rule.bucket != trigger.bucket:
            continue
        if not any(glob_match(trigger.object, p) for p in rule.include):
            continue
        if any(glob_match(trigger.object, p) for p in rule.exclude):
            continue
        return route
    return None


def _plan_data(
    config: Config, trigger: Trigger, templates: TemplateLookup
) -> RunRequest | Skip | Batch:
    uri = trigger.gcs_uri
    if trigger.event_type not in FINALIZE_TYPES:
        return Skip(
            f"{trigger.event_type or 'event'} is not an object finalize; only new objects trigger"
        )
    if reason := skip_reason(config, trigger):
        return Skip(reason)
    if reason := temporary_reason(trigger.object):
        return Skip(f"{reason}: {uri}")
    route = select_data_route(config, trigger)
    if route is None:
        return Skip(f"no route's data rule matches {uri}")
    rule = route.data
    assert rule is not None
    base = posixpath.basename(trigger.object)
    if rule.mode == "window":
        if trigger.size is not None and trigger.size < rule.min_size:
            return Skip(
                f"object is {trigger.size} bytes, below min_size {rule.min_size}: {uri}",
                route=route.name,
            )
        return Batch(route=route.name, run_key=f"{uri}#{trigger.generation}")
    if rule.mode == "marker":
        if base != rule.marker:
            return Skip(
                f"route {route.name} waits for marker {rule.marker}; {base} is data",
                route=route.name,
            )
        folder = trigger.object[: -len(base)]
        data_uri = f"gs://{trigger.bucket}/{folder}"
        readable = posixpath.basename(folder.rstrip("/")) or "root"
    else:
        if trigger.size is not None and trigger.size < rule.min_size:
            return Skip(
                f"object is {trigger.size} bytes, below min_size {rule.min_size}: {uri}",
                route=route.name,
            )
        data_uri = uri
        readable = base
    run_key = f"{uri}#{trigger.generation}"
    return _request(config, route, trigger, run_key, readable, {"data_uri": data_uri}, templates)


# --------------------------------------------------------------------------- HTTP rules


def select_http_route(config: Config, trigger: Trigger) -> Route:
    kind = str(trigger.kind)
    if trigger.route:
        route = config.route(trigger.route)
        if route is None:
            raise Unprocessable(f"unknown route {trigger.route!r}", code="unknown_route")
        if not route.accepts(kind):
            raise Unprocessable(
                f"route {route.name} does not accept {kind} triggers", code="kind_not_accepted"
            )
        return route
    candidates = [r for r in config.routes if r.accepts(kind)]
    if not candidates:
        raise Unprocessable(f"no route accepts {kind} triggers", code="kind_not_accepted")
    if len(candidates) > 1:
        names = ", ".join(r.name for r in candidates)
        raise Unprocessable(
            f"several routes accept {kind} triggers ({names}); name one in 'route'",
            code="ambiguous_route",
        )
    return candidates[0]


def _plan_change(config: Config, trigger: Trigger, templates: TemplateLookup) -> RunRequest | Skip:
    if trigger.kind is Kind.CODE and trigger.event_type not in ("", "SUCCESS", "http.code"):
        build = f"build {trigger.build_id}" if trigger.build_id else "build"
        return Skip(f"{build} status {trigger.event_type}; only SUCCESS triggers")
    route = select_http_route(config, trigger)
    if trigger.template and not template_allowed(trigger.template, route.allowed_templates):
        raise Forbidden(
            f"template {trigger.template} is not under an allowed prefix of route {route.name}",
            code="template_not_allowed",
        )
    assert route.data is not None or route.code or route.model
    data_uri = route.data.dataset_uri if route.data else ""
    if trigger.kind is Kind.CODE:
        run_key = f"code:{trigger.commit_sha}:{trigger.image_uri}"
        readable = trigger.commit_sha[:8] or trigger.image_uri.rsplit("/", 1)[-1].split("@")[0]
    else:
        run_key = f"model:{trigger.model_uri}"
        readable = trigger.model_uri.rstrip("/").rsplit("/", 1)[-1]
    return _request(config, route, trigger, run_key, readable, {"data_uri": data_uri}, templates)


def template_allowed(template: str, prefixes: tuple[str, ...]) -> bool:
    """Whether ``template`` lies under one of ``prefixes`` on path boundaries.

    ``gs://b/mnist`` admits ``gs://b/mnist`` and ``gs://b/mnist/…``, never ``gs://b/mnist-x/…``;
    ``https://<region>-kfp.pkg.dev/<project>`` never admits ``…/<project>-other/…``. Both sides
    are canonical (``events.uri_problem`` refuses ``..``, ``//``, ``%`` …), so no server-side
    normalisation can move a URI that passed here out from under its prefix.
    """
    if uri_problem(template):
        return False
    return any(under(template, prefix) for prefix in prefixes)


# --------------------------------------------------------------------------- request


def template_fields(
    config: Config, route: Route, trigger: Trigger, run_key: str, extra: dict[str, str]
) -> dict[str, str]:
    fields = {
        "bucket": trigger.bucket,
        "object": trigger.object,
        "generation": trigger.generation,
        "size": "" if trigger.size is None else str(trigger.size),
        "commit_sha": trigger.commit_sha,
        "image_uri": trigger.image_uri,
        "build_id": trigger.build_id,
        "branch": trigger.branch,
        "model_uri": trigger.model_uri,
        "event_id": trigger.event_id,
        "event_time": trigger.event_time,
        "kind": str(trigger.kind),
        "run_key": run_key,
        "route": route.name,
        "nonce": trigger.nonce,
        "project": config.project,
        "region": config.region,
        "pipeline_root": route.pipeline_root,
        "manifest_uri": "",
        "data_uri": "",
    }
    fields.update(extra)
    return fields


def _request(
    config: Config,
    route: Route,
    trigger: Trigger,
    run_key: str,
    readable: str,
    extra: dict[str, str],
    templates: TemplateLookup,
) -> RunRequest:
    if trigger.force:
        if not trigger.nonce:
            raise Unprocessable(
                "force needs a nonce, so that retries and replays of this request start one run: "
                'send "nonce" (1-64 characters of A-Z a-z 0-9 . _ -, new for each rerun you want)',
                code="nonce_required",
            )
        run_key = f"{run_key}#force={trigger.nonce}"
    kind = str(trigger.kind)
    job_id = job_id_for(route.name, kind, readable, run_key)
    fields = template_fields(config, route, trigger, run_key, extra)
    values: dict[str, Any] = {}
    for name, value in route.parameters.items():
        values[name] = render(value, fields) if isinstance(value, str) else value
    template = trigger.template or route.template
    # Typed here, once: a value that does not convert to its declared type is refused (422).
    typed = templates.for_route(route, template).coerce(values)
    labels = dict(route.labels)
    labels.update(
        {
            ROUTE_LABEL: label_value(route.name),
            KIND_LABEL: kind,
            KEY_LABEL: key_hash(run_key),
        }
    )
    if trigger.commit_sha:
        labels[COMMIT_LABEL] = label_value(trigger.commit_sha[:12])
    display = _CONTROL.sub(" ", render(route.display_name, fields))[:128].strip() or job_id
    return RunRequest(
        route=route.name,
        run_key=run_key,
        job_id=job_id,
        display_name=display,
        template=template,
        pipeline_root=route.pipeline_root,
        parameter_values=typed,
        labels=labels,
        service_account=route.service_account,
        network=route.network,
        encryption_key=route.encryption_key,
        project=config.project,
        region=config.region,
        trigger=trigger,
    )


def window_request(
    config: Config,
    route: Route,
    window_id: str,
    manifest_uri: str,
    trigger: Trigger,
    templates: TemplateLookup,
) -> RunRequest:
    """The run a closed batch window starts: its manifest is the data."""
    run_key = f"window:{route.name}:{window_id}"
    extra = {"data_uri": manifest_uri, "manifest_uri": manifest_uri}
    readable = "window-" + window_id[-12:]
    return _request(config, route, trigger, run_key, readable, extra, templates)


def plan(config: Config, trigger: Trigger, templates: TemplateLookup) -> RunRequest | Skip | Batch:
    """Decides what a trigger starts: a typed RunRequest, a Skip with its reason, or a Batch.

    Raises RejectedError subclasses for input that can never work, ``TemplateError`` for a
    template that cannot be read or does not fit the route.
    """
    if trigger.kind is Kind.DATA:
        return _plan_data(config, trigger, templates)
    return _plan_change(config, trigger, templates)
