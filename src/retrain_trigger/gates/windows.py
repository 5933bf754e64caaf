"""Batch windows: one run per batch of objects, with a manifest of what it covers.

A data route with ``mode: window`` does not start a run per object: each finalized object joins
the route's open window (:func:`add`). :func:`close_due` closes the windows that are due (quiet
for ``quiet_seconds``, or open for ``max_wait_seconds``): it claims the window in the state store
(so two flushes racing each other close it once), writes a JSON manifest of every object and
generation under the route's pipeline root, records the manifest and run key, submits exactly one
run whose parameters carry the manifest URI, and closes the window. A flush that crashes between
the manifest and the submit leaves the window CLOSING; once its lease expires the next flush
finishes it with the recorded run key, and Vertex answers a second create ``duplicate``.

In production Cloud Scheduler calls ``POST /flush`` on the HTTP function every minute; locally the
stack's ticker does (both reach ``Service.flush``). A flush also starts queued runs of
``queue_latest`` routes whose active run has ended (``concurrency.start_queued``), and sweeps the
state store (:func:`sweep`): at most :data:`SWEEP_LIMIT` expired records (decisions, and closed windows and
their items past their retention) per flush.

The gate submits through ``run`` (a RunRequest built here, its trigger and the window id ->
the Decision) and reports failures before a submission through ``fail``: both are the Service's
public methods, passed in, so that every decision is gated, logged and recorded in one place.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import secrets
import socket
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from retrain_trigger import rules
from retrain_trigger.errors import BackendUnavailable, SubmitError
from retrain_trigger.model import Decision, Kind, Outcome, RunRequest, Trigger

if TYPE_CHECKING:
    from retrain_trigger.config import Config, Route
    from retrain_trigger.store import StateStore, Window, WindowInfo, WindowItem

Clock = Callable[[], float]
# Submits a RunRequest built here (with its trigger and the window id) through the gates.
Run = Callable[[RunRequest, Trigger, str], Decision]
# The Decision for a failure before anything was submitted.
Fail = Callable[[SubmitError], Decision]

log = logging.getLogger(__name__)

MANIFEST_FOLDER = "manifests"
# A window still open this long past its route's max_wait_seconds is overdue: two periods of the
# every-minute Cloud Scheduler job that calls /flush. Each flush that finds one logs a
# ``window_overdue`` line (deploy/terraform/monitoring.tf counts them and alerts).
OVERDUE_GRACE_SECONDS = 120.0
# The most expired records one flush deletes (bounded work per call; the next flush goes on).
SWEEP_LIMIT = 1000


def manifest_uri_for(route: Route, window_id: str) -> str:
    return f"{route.pipeline_root}/{MANIFEST_FOLDER}/{route.name}/{window_id}.json"


MANIFEST_KIND = "retrain-trigger.window-manifest/v1"
# Bytes handed to the writer at a time; a GCS upload sends them in chunks of this size (a multiple
# of 256 KiB, as resumable uploads require), so memory stays bounded whatever the window's size.
MANIFEST_CHUNK_BYTES = 1024 * 1024
# Window items read from the store per page while the manifest streams.
MANIFEST_PAGE = 1000


class ManifestIncomplete(RuntimeError):
    """The items read while streaming were not the items the claim counted."""


def _object(item: WindowItem) -> dict[str, Any]:
    return {
        "uri": item.gcs_uri,
        "bucket": item.bucket,
        "name": item.object,
        "generation": item.generation,
        "size": item.size,
    }


def manifest_chunks(
    route: Route, window: Window, items: Iterable[WindowItem], count: int
) -> Iterator[bytes]:
    """The manifest, piece by piece, as ``json.dumps(body, indent=1, sort_keys=True)`` would
    write it whole: deterministic for a given window, so a manifest re-written after a crash is
    identical. ``count`` (written before the objects, as the keys are sorted) is the number the
    claim recorded; a different number of items raises :class:`ManifestIncomplete` before the
    last piece, so an incomplete manifest is never finished."""
    head = {
        "kind": MANIFEST_KIND,
        "route": route.name,
        "window_id": window.window_id,
        "run_key": f"window:{route.name}:{window.window_id}",
        "opened_at": window.opened_at,
    }
    dump = functools.partial(json.dumps, indent=1, sort_keys=True)
    yield f'{{\n "count": {dump(count)},\n "kind": {dump(head["kind"])},\n "objects": ['.encode()
    seen = 0
    pieces: list[str] = []
    size = 0
    for item in items:
        text = ("\n  " if seen == 0 else ",\n  ") + dump(_object(item)).replace("\n", "\n  ")
        seen += 1
        pieces.append(text)
        size += len(text)
        if size >= MANIFEST_CHUNK_BYTES:
            yield "".join(pieces).encode()
            pieces, size = [], 0
    if seen != count:
        raise ManifestIncomplete(
            f"window {window.window_id}: {seen} items read, {count} counted at its claim"
        )
    closing = "\n ]" if seen else "]"
    tail = "".join(f',\n "{key}": {dump(head[key])}' for key in sorted(head) if key != "kind")
    yield ("".join(pieces) + closing + tail + "\n}").encode()


def manifest_body(route: Route, window: Window, items: list[WindowItem]) -> bytes:
    """The whole manifest of ``items`` in memory (small windows, tests)."""
    return b"".join(manifest_chunks(route, window, items, len(items)))


def write_manifest(uri: str, data: bytes | Iterable[bytes]) -> None:
    """Writes the manifest from its pieces: to GCS as one resumable upload sent in chunks and
    finished only after the last piece (a failure midway leaves no object), or to a local file
    renamed into place."""
    chunks: Iterable[bytes] = [data] if isinstance(data, bytes) else data
    if uri.startswith("gs://"):
        from retrain_trigger import gcs

        gcs.write_stream(
            uri, chunks, content_type="application/json", chunk_size=MANIFEST_CHUNK_BYTES
        )
        return
    os.makedirs(os.path.dirname(uri), exist_ok=True)
    tmp = f"{uri}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
        os.replace(tmp, uri)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def add(batch: rules.Batch, trigger: Trigger, *, store: StateStore, clock: Clock) -> Decision:
    """The object joins its route's open window (one is opened when none is): ``skipped``
    ``batched``, or ``duplicate`` when the object was already recorded for the route."""
    from retrain_trigger.store.base import WindowItem  # the store's module, opened already

    info = store.add_to_window(batch.route, WindowItem.from_trigger(trigger), clock())
    if not info.added:
        # An OPEN window has started no run yet: only a claimed one is read (for its job).
        window = None if info.state == "OPEN" else store.get_window(info.window_id)
        return Decision(
            outcome=Outcome.DUPLICATE,
            reason=f"already in batch window {info.window_id} ({info.state})",
            route=batch.route,
            run_key=batch.run_key,
            job_id=window.job_id if window else "",
            job_name=window.job_name if window else "",
            window_id=info.window_id,
        )
    return Decision(
        outcome=Outcome.BATCHED,
        reason=f"batched into window {info.window_id}; one run starts when it closes",
        route=batch.route,
        run_key=batch.run_key,
        window_id=info.window_id,
        code="batched",
    )


def close_due(
    config: Config,
    route: Route,
    *,
    store: StateStore,
    templates: rules.TemplateLookup,
    now: float,
    lease: float,
    run: Run,
    fail: Fail,
    clock: Clock,
    owner: str = "",
    force: bool = False,
) -> list[Decision]:
    """Closes the route's due windows (every open one with ``force``): one Decision each.

    ``force`` is an operator's "run on what arrived", due or not.
    """
    rule = route.data
    if rule is None or rule.mode != "window":
        return []
    owner = owner or default_owner()
    quiet, max_wait = (0, 0) if force else (rule.quiet_seconds, rule.max_wait_seconds)
    decisions: list[Decision] = []
    for info in store.due_windows(route.name, now, quiet, max_wait):
        window = store.claim_window(info.window_id, owner, now, lease)
        if window is None:  # another flush holds it
            report_overdue(route, info, now)
            continue
        decision = close(
            config,
            route,
            window,
            owner,
            store=store,
            templates=templates,
            run=run,
            fail=fail,
            clock=clock,
        )
        decisions.append(decision)
        if decision.outcome not in (Outcome.SUBMITTED, Outcome.DUPLICATE):
            report_overdue(route, info, now)
    return decisions


def report_overdue(route: Route, info: WindowInfo, now: float) -> bool:
    """Logs a ``window_overdue`` line when a window this flush could not close has been open more
    than :data:`OVERDUE_GRACE_SECONDS` past its route's ``max_wait_seconds``."""
    rule = route.data
    if rule is None:
        return False
    age = now - info.opened_at
    if age <= rule.max_wait_seconds + OVERDUE_GRACE_SECONDS:
        return False
    entry = {
        "severity": "WARNING",
        "message": (
            f"window {info.window_id} of route {route.name} still open after {age:.0f} s "
            f"(max_wait_seconds {rule.max_wait_seconds:g}): the flush could not close it"
        ),
        "event": "window_overdue",
        "route": route.name,
        "window_id": info.window_id,
        "age_seconds": round(age, 1),
        "state": str(info.state),
        "logging.googleapis.com/labels": {"retrain-route": route.name},
    }
    if info.count is not None:
        entry["objects"] = info.count
    log.warning(entry["message"], extra={"entry": entry})
    return True


def sweep(store: StateStore, now: float, limit: int = SWEEP_LIMIT) -> int:
    """Deletes up to ``limit`` expired records; best effort (a failure is logged, and Firestore's
    TTL policies delete the same in production). Returns how many were deleted."""
    try:
        deleted = int(store.purge_expired(now, limit=limit))
    except Exception as exc:  # never fails the flush: the windows were closed already
        log.warning("state store sweep failed: %s", exc)
        return 0
    if deleted:
        log.info("state store sweep: %d expired record(s) deleted", deleted)
    return deleted


def close(
    config: Config,
    route: Route,
    window: Window,
    owner: str,
    *,
    store: StateStore,
    templates: rules.TemplateLookup,
    run: Run,
    fail: Fail,
    clock: Clock,
) -> Decision:
    """Manifest, record, submit, close: the steps of one claimed window."""
    assert route.data is not None
    trigger = Trigger(
        kind=Kind.DATA,
        source="window",
        event_type="window.closed",
        event_id=window.window_id,
        bucket=route.data.bucket,
    )
    manifest_uri = window.manifest_uri or manifest_uri_for(route, window.window_id)
    try:
        if not window.manifest_uri:
            items = store.iter_window_items(window.window_id, page_size=MANIFEST_PAGE)
            write_manifest(manifest_uri, manifest_chunks(route, window, items, window.count))
        request = rules.window_request(
            config, route, window.window_id, manifest_uri, trigger, templates
        )
        recorded = store.set_window_manifest(
            window.window_id, manifest_uri, request.run_key, request.job_id
        )
    except Exception as exc:  # the window stays CLOSING; its lease expires and a flush retries
        log.warning("window %s: manifest not written: %s", window.window_id, exc)
        return fail(BackendUnavailable(f"window {window.window_id}: manifest not written: {exc}"))
    if recorded.run_key != request.run_key:  # an earlier flush chose already; reuse its run
        request = rules.window_request(
            config, route, window.window_id, recorded.manifest_uri, trigger, templates
        )
    decision = run(request, trigger, window.window_id)
    held = decision.outcome is Outcome.SKIPPED and decision.code == "held"
    if decision.outcome in (Outcome.SUBMITTED, Outcome.DUPLICATE) or (
        held and route.concurrency == "queue_latest"
    ):
        store.close_window(window.window_id, owner, decision.job_name, now=clock())
    return decision
