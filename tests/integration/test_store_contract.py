"""One contract for every state store: SQLite and Firestore (through its emulator).

Races are run between two store objects on the same data (``twin``), as two function instances
would, and every store reads the time from a clock the test controls.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from retrain_trigger.config import Config
from retrain_trigger.decisions import decision_entry
from retrain_trigger.model import Decision, Kind, Outcome, Trigger
from retrain_trigger.store import (
    SQLiteStore,
    StateStore,
    WindowItem,
    WindowState,
    open_store,
)
from retrain_trigger.store.sqlite import SCHEMA_VERSION
from tests.clock import T0, Clock

pytestmark = pytest.mark.emulator

DAY = 86400.0


@pytest.fixture
def twin(store_backing: Any, clock: Clock) -> StateStore:
    """A second store object on the same data: another function instance."""
    opened: StateStore = store_backing.open(clock=clock)
    return opened


def item(name: str, generation: str = "1", bucket: str = "ct-bucket") -> WindowItem:
    return WindowItem(
        bucket=bucket, object=f"data/2026-11-27/{name}", generation=generation, size=10
    )


def in_threads(count: int, target: Callable[[int], Any]) -> list[Any]:
    """Runs ``target(i)`` in ``count`` threads released together; returns the results."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    return results


# --------------------------------------------------------------------------- windows


def test_events_accumulate_in_one_open_window_per_route(store: StateStore) -> None:
    first = store.add_to_window("mnist", item("a.csv"), T0)
    second = store.add_to_window("mnist", item("b.csv"), T0 + 5)
    other = store.add_to_window("other", item("a.csv"), T0 + 6)

    assert first.added and second.added and other.added
    assert second.window_id == first.window_id != other.window_id
    assert first.window_id.startswith("mnist__") and "/" not in first.window_id
    # adding never counts the window (that would cost in proportion to its size)
    assert (second.count, second.opened_at, second.last_event_at) == (None, T0, T0 + 5)
    assert second.state is WindowState.OPEN
    window = store.get_window(first.window_id)
    assert window is not None
    assert (window.route, window.state, window.count) == ("mnist", WindowState.OPEN, 2)
    assert (window.opened_at, window.last_event_at, window.size_bytes) == (T0, T0 + 5, 20)
    assert [w.window_id for w in store.list_windows("mnist")] == [first.window_id]
    assert [i.object for i in store.window_items(first.window_id)] == [
        "data/2026-11-27/a.csv",
        "data/2026-11-27/b.csv",
    ]
    assert store.get_window("mnist__nope") is None


def test_items_are_deduplicated_by_object_and_generation(store: StateStore) -> None:
    first = store.add_to_window("mnist", item("a.csv", "1"), T0)
    again = store.add_to_window("mnist", item("a.csv", "1"), T0 + 30)
    newer = store.add_to_window("mnist", item("a.csv", "2"), T0 + 40)

    assert not again.added
    assert (again.window_id, again.count, again.last_event_at) == (first.window_id, None, T0)
    assert (again.state, again.opened_at) == (WindowState.OPEN, T0)
    assert newer.added and newer.window_id == first.window_id
    window = store.get_window(first.window_id)
    assert window is not None and (window.count, window.last_event_at) == (2, T0 + 40)
    assert [(i.object, i.generation) for i in store.window_items(first.window_id)] == [
        ("data/2026-11-27/a.csv", "1"),
        ("data/2026-11-27/a.csv", "2"),
    ]
    stored = store.window_items(first.window_id)[0]
    assert (stored.bucket, stored.size, stored.added_at) == ("ct-bucket", 10, T0)


def test_a_window_is_due_when_quiet_or_open_too_long(store: StateStore) -> None:
    quiet, max_wait = 60, 300
    info = store.add_to_window("mnist", item("a.csv"), T0)
    store.add_to_window("other", item("a.csv"), T0 + 200)

    assert store.due_windows(None, T0 + 59, quiet, max_wait) == []
    due = store.due_windows(None, T0 + 60, quiet, max_wait)
    assert [w.window_id for w in due] == [info.window_id]
    assert due[0].count == 1 and due[0].state is WindowState.OPEN

    # events keep arriving: never quiet, but due once it has been open for max_wait
    for offset in range(30, 300, 30):
        store.add_to_window("mnist", item(f"more-{offset}.csv"), T0 + offset)
    assert store.due_windows("mnist", T0 + 299, quiet, max_wait) == []
    assert [w.window_id for w in store.due_windows("mnist", T0 + 300, quiet, max_wait)] == [
        info.window_id
    ]
    assert store.due_windows("nothing-here", T0 + 10 * DAY, quiet, max_wait) == []
    assert {w.route for w in store.due_windows(None, T0 + 10 * DAY, quiet, max_wait)} == {
        "mnist",
        "other",
    }


def test_only_one_of_two_concurrent_claims_wins(store: StateStore, twin: StateStore) -> None:
    window_id = store.add_to_window("mnist", item("a.csv"), T0).window_id
    stores = (store, twin)

    claims = in_threads(2, lambda i: stores[i].claim_window(window_id, f"flush-{i}", T0 + 60, 120))

    winners = [c for c in claims if c is not None]
    assert len(winners) == 1
    won = winners[0]
    assert (won.state, won.lease_until, won.claims) == (WindowState.CLOSING, T0 + 180, 1)
    stored = store.get_window(window_id)
    assert stored is not None and stored.owner == won.owner
    assert store.claim_window(window_id, "flush-late", T0 + 61, 120) is None
    assert store.due_windows("mnist", T0 + 61, 1, 1) == []  # claimed, lease running


def test_an_expired_lease_can_be_reclaimed(store: StateStore) -> None:
    window_id = store.add_to_window("mnist", item("a.csv"), T0).window_id
    first = store.claim_window(window_id, "crashed", T0 + 60, 30)
    assert first is not None

    assert store.claim_window(window_id, "second", T0 + 89, 30) is None
    renewed = store.claim_window(window_id, "crashed", T0 + 70, 30)  # the owner may renew
    assert renewed is not None and renewed.lease_until == T0 + 100
    due = store.due_windows(None, T0 + 100, 60, 300)
    assert [(w.window_id, w.state) for w in due] == [(window_id, WindowState.CLOSING)]

    second = store.claim_window(window_id, "second", T0 + 100, 30)
    assert second is not None
    assert (second.owner, second.claims, second.lease_until) == ("second", 3, T0 + 130)
    assert not store.close_window(window_id, "crashed", "projects/p/jobs/x", now=T0 + 101)
    assert store.close_window(window_id, "second", "projects/p/jobs/x", now=T0 + 102)
    assert store.close_window(window_id, "second", "projects/p/jobs/x", now=T0 + 103)  # again
    closed = store.get_window(window_id)
    assert closed is not None
    assert (closed.state, closed.job_name, closed.closed_at) == (
        WindowState.CLOSED,
        "projects/p/jobs/x",
        T0 + 102,
    )
    assert store.claim_window(window_id, "third", T0 + 10 * DAY, 30) is None
    assert store.due_windows(None, T0 + 10 * DAY, 60, 300) == []


def test_events_after_a_claim_go_to_a_new_window(store: StateStore) -> None:
    old = store.add_to_window("mnist", item("a.csv"), T0).window_id
    assert store.claim_window(old, "flush", T0 + 60, 120) is not None

    new = store.add_to_window("mnist", item("b.csv"), T0 + 61)
    redelivered = store.add_to_window("mnist", item("a.csv"), T0 + 62)

    assert new.added and new.window_id != old and new.opened_at == T0 + 61
    assert [(w.count, w.last_event_at) for w in store.list_windows("mnist")] == [
        (1, T0),
        (1, T0 + 61),
    ]
    assert not redelivered.added and redelivered.window_id == old
    assert redelivered.state is WindowState.CLOSING
    assert [i.object for i in store.window_items(old)] == ["data/2026-11-27/a.csv"]
    assert [w.window_id for w in store.list_windows("mnist")] == [old, new.window_id]
    assert [w.window_id for w in store.list_windows("mnist", WindowState.OPEN)] == [new.window_id]
    assert [w.window_id for w in store.list_windows("mnist", "CLOSING")] == [old]


def test_the_manifest_is_recorded_before_close_and_survives_a_crash(store: StateStore) -> None:
    window_id = store.add_to_window("mnist", item("a.csv"), T0).window_id
    with pytest.raises(ValueError, match="is OPEN: claim it first"):
        store.set_window_manifest(window_id, "gs://b/m.json", "key-1", "job-1")
    with pytest.raises(LookupError, match="no window 'mnist__nope'"):
        store.set_window_manifest("mnist__nope", "gs://b/m.json", "key-1", "job-1")

    assert store.claim_window(window_id, "first", T0 + 60, 30) is not None
    recorded = store.set_window_manifest(window_id, "gs://b/manifest-1.json", "key-1", "job-1")
    assert (recorded.manifest_uri, recorded.run_key, recorded.job_id) == (
        "gs://b/manifest-1.json",
        "key-1",
        "job-1",
    )
    # "first" crashes before submitting; the next flush reclaims and reuses the run key
    again = store.claim_window(window_id, "second", T0 + 91, 30)
    assert again is not None and (again.run_key, again.job_id) == ("key-1", "job-1")
    kept = store.set_window_manifest(window_id, "gs://b/manifest-2.json", "key-2", "job-2")
    assert (kept.manifest_uri, kept.run_key, kept.job_id) == (
        "gs://b/manifest-1.json",
        "key-1",
        "job-1",
    )

    assert store.close_window(window_id, "second", "projects/p/locations/r/pipelineJobs/job-1")
    closed = store.get_window(window_id)
    assert closed is not None and closed.state is WindowState.CLOSED
    assert (closed.run_key, closed.job_name) == (
        "key-1",
        "projects/p/locations/r/pipelineJobs/job-1",
    )
    assert closed.closed_at is not None and closed.lease_until is None


def test_two_hundred_items_in_one_window(store: StateStore) -> None:
    names = [f"part-{n:04d}.csv" for n in range(200)]
    for n, name in enumerate(names):
        store.add_to_window("mnist", item(name), T0 + n * 0.5)

    (window,) = store.list_windows("mnist")
    assert (window.count, window.opened_at, window.last_event_at) == (200, T0, T0 + 99.5)
    items = store.window_items(window.window_id)
    assert [i.object.rsplit("/", 1)[1] for i in items] == names
    claimed = store.claim_window(window.window_id, "flush", T0 + 400, 60)
    assert claimed is not None and claimed.count == 200


def test_concurrent_events_all_land_in_one_window(store: StateStore, twin: StateStore) -> None:
    stores = (store, twin)

    def add(i: int) -> list[str]:
        return [
            stores[i].add_to_window("mnist", item(f"t{i}-{n}.csv"), T0 + n).window_id
            for n in range(8)
        ]

    ids = {wid for result in in_threads(2, add) for wid in result}
    assert len(ids) == 1
    window = store.get_window(ids.pop())
    assert window is not None and window.count == 16
    assert len(store.window_items(window.window_id)) == 16


def test_no_event_joins_a_window_after_its_claim(store: StateStore, twin: StateStore) -> None:
    """Events keep arriving while another instance claims the window: each lands either in the
    claimed window, before the claim, or in the next one, never in the claimed one after it."""
    claimed: dict[str, Any] = {}

    def add(_: int) -> None:
        for n in range(40):
            store.add_to_window("mnist", item(f"busy-{n:02d}.csv"), T0 + n)

    def claim(_: int) -> None:
        deadline = time.monotonic() + 60
        while not (open_windows := twin.list_windows("mnist", WindowState.OPEN)) or (
            open_windows[0].count < 5
        ):  # poll until some events are in the open window
            assert time.monotonic() < deadline, "no open window with events after 60 s"
            time.sleep(0.005)
        window = twin.claim_window(open_windows[0].window_id, "flush", T0 + 100, 60)
        assert window is not None
        claimed["id"] = window.window_id
        claimed["items"] = [i.object for i in twin.window_items(window.window_id)]

    in_threads(2, lambda i: (add, claim)[i](i))

    windows = store.list_windows("mnist")
    assert windows[0].window_id == claimed["id"]
    assert [i.object for i in store.window_items(claimed["id"])] == claimed["items"]
    everything = [i.object for w in windows for i in store.window_items(w.window_id)]
    assert sorted(everything) == [f"data/2026-11-27/busy-{n:02d}.csv" for n in range(40)]
    assert [w.count for w in windows] == [len(store.window_items(w.window_id)) for w in windows]


def test_items_stream_in_pages_in_the_order_they_were_added(store: StateStore) -> None:
    names = [f"page-{n:02d}.csv" for n in range(10)]
    for n, name in enumerate(names):
        window_id = store.add_to_window("mnist", item(name), T0 + n).window_id

    for page_size in (1, 3, 10, 11):
        streamed = store.iter_window_items(window_id, page_size=page_size)
        assert [i.object.rsplit("/", 1)[1] for i in streamed] == names
    assert list(store.iter_window_items("mnist__nope")) == []
    with pytest.raises(ValueError, match="page_size must be at least 1, got 0"):
        list(store.iter_window_items(window_id, page_size=0))


def test_a_claim_records_the_tally_of_its_final_items(store: StateStore) -> None:
    sizes = [10, 0, 5]
    for n, size in enumerate(sizes):
        window_id = store.add_to_window(
            "mnist", WindowItem("b", f"data/{n}.csv", "1", size=size), T0 + n
        ).window_id
    store.add_to_window("mnist", WindowItem("b", "data/unknown.csv", "1", size=None), T0 + 7)

    claimed = store.claim_window(window_id, "flush", T0 + 60, 30)
    assert claimed is not None
    assert (claimed.count, claimed.size_bytes, claimed.last_event_at) == (4, 15, T0 + 7)
    late = store.add_to_window("mnist", WindowItem("b", "data/late.csv", "1", size=99), T0 + 61)
    assert late.window_id != window_id
    renewed = store.claim_window(window_id, "flush", T0 + 70, 30)
    assert renewed is not None and (renewed.count, renewed.size_bytes) == (4, 15)
    due = store.due_windows("mnist", T0 + 10 * DAY, 60, 300)
    assert [(w.window_id, w.count, w.last_event_at) for w in due] == [
        (window_id, 4, T0 + 7),
        (late.window_id, 1, T0 + 61),
    ]


# --------------------------------------------------------------------------- concurrency


def test_pending_keeps_only_the_latest_run(store: StateStore) -> None:
    assert store.get_pending("mnist") is None
    assert store.set_pending("mnist", json.dumps({"run_key": "k1"}), "k1", T0) is None
    replaced = store.set_pending("mnist", json.dumps({"run_key": "k2"}), "k2", T0 + 1)
    assert replaced is not None and (replaced.run_key, replaced.queued_at) == ("k1", T0)
    assert json.loads(replaced.request_json) == {"run_key": "k1"}
    store.set_pending("other", "{}", "o1", T0 + 2)

    pending = store.get_pending("mnist")
    assert pending is not None and (pending.route, pending.run_key) == ("mnist", "k2")
    taken = store.take_pending("mnist")
    assert taken == pending
    assert store.take_pending("mnist") is None and store.get_pending("mnist") is None
    other = store.get_pending("other")
    assert other is not None and other.run_key == "o1"


def test_taking_a_named_pending_run_leaves_a_newer_one_queued(store: StateStore) -> None:
    store.set_pending("mnist", json.dumps({"run_key": "k1"}), "k1", T0)
    store.set_pending("mnist", json.dumps({"run_key": "k2"}), "k2", T0 + 1)  # replaces k1

    assert store.take_pending("mnist", run_key="k1") is None
    still = store.get_pending("mnist")
    assert still is not None and still.run_key == "k2"
    taken = store.take_pending("mnist", run_key="k2")
    assert taken == still and store.get_pending("mnist") is None
    assert store.take_pending("mnist", run_key="k2") is None


def test_only_one_taker_gets_the_pending_run(store: StateStore, twin: StateStore) -> None:
    store.set_pending("mnist", "{}", "k1", T0)
    stores = (store, twin)

    taken = in_threads(2, lambda i: stores[i].take_pending("mnist"))

    assert [t.run_key for t in taken if t is not None] == ["k1"]


def test_active_job_is_cleared_only_by_its_own_job(store: StateStore) -> None:
    assert store.get_active("mnist") is None
    assert store.set_active("mnist", "job-1", "", T0, expect_job_id="")
    assert not store.set_active("mnist", "job-2", "", T0 + 1, expect_job_id="")  # job-1 runs
    assert store.set_active(
        "mnist", "job-1", "projects/p/jobs/job-1", T0 + 2, expect_job_id="job-1"
    )
    active = store.get_active("mnist")
    assert active is not None
    assert (active.job_id, active.job_name, active.started_at) == (
        "job-1",
        "projects/p/jobs/job-1",
        T0 + 2,
    )

    assert not store.clear_active("mnist", "job-0")
    assert store.get_active("mnist") is not None
    assert store.clear_active("mnist", "job-1")
    assert store.get_active("mnist") is None
    assert not store.clear_active("mnist", "job-1")
    assert store.set_active("mnist", "job-3", "n3", T0 + 3)  # unconditional
    assert store.set_active("mnist", "job-4", "n4", T0 + 4)
    latest = store.get_active("mnist")
    assert latest is not None and latest.job_id == "job-4"


def test_only_one_of_two_racing_starts_becomes_active(store: StateStore, twin: StateStore) -> None:
    stores = (store, twin)
    started = in_threads(
        2,
        lambda i: stores[i].set_active(
            "mnist", f"job-{i}", "", T0, expect_revision=0, lease_seconds=60
        ),
    )

    assert sorted(started) == [False, True]
    active = store.get_active("mnist")
    assert active is not None and active.job_id == f"job-{started.index(True)}"


def test_a_reservation_holds_a_lease_and_compare_and_set_is_on_the_revision(
    store: StateStore, twin: StateStore
) -> None:
    assert store.set_active("mnist", "job-1", "", T0, expect_revision=0, lease_seconds=60)
    reserved = store.get_active("mnist")
    assert reserved is not None
    assert (reserved.job_id, reserved.job_name, reserved.lease_until, reserved.revision) == (
        "job-1",
        "",
        T0 + 60,
        1,
    )
    assert reserved.reserved and reserved.reservation_valid(T0 + 59)
    assert not reserved.reservation_valid(T0 + 60)
    # a reader that saw no record (revision 0) cannot take the slot
    assert not twin.set_active("mnist", "job-2", "", T0 + 61, expect_revision=0, lease_seconds=60)

    # the create has been answered: the reservation becomes the created job
    assert store.set_active(
        "mnist", "job-1", "projects/p/jobs/job-1", T0 + 1, expect_job_id="job-1"
    )
    created = store.get_active("mnist")
    assert created is not None and not created.reserved
    assert (created.job_name, created.lease_until, created.revision) == (
        "projects/p/jobs/job-1",
        None,
        2,
    )
    # a takeover decided on what the reservation was (revision 1) is refused: it is stale
    assert not twin.set_active("mnist", "job-2", "", T0 + 61, expect_revision=1, lease_seconds=60)
    assert twin.set_active("mnist", "job-2", "", T0 + 61, expect_revision=2, lease_seconds=60)
    taken = store.get_active("mnist")
    assert taken is not None and (taken.job_id, taken.revision) == ("job-2", 3)
    # the first job's answer comes too late: its compare-and-set fails
    assert not store.set_active("mnist", "job-1", "n1", T0 + 62, expect_job_id="job-1")


def test_runs_that_lost_the_slot_stay_tracked(store: StateStore) -> None:
    assert store.set_active("mnist", "job-2", "", T0, expect_revision=0, lease_seconds=60)
    store.track_active("mnist", "job-1", "n1", T0 + 1)
    store.track_active("mnist", "job-1", "n1", T0 + 2)  # once
    store.track_active("mnist", "job-2", "n2", T0 + 2)  # the holder: nothing to add
    tracked = store.get_active("mnist")
    assert tracked is not None
    assert (tracked.job_id, tracked.others, tracked.revision) == ("job-2", ("job-1",), 1)

    assert store.set_active("mnist", "job-2", "n2", T0 + 3, expect_job_id="job-2")
    kept = store.get_active("mnist")
    assert kept is not None and kept.others == ("job-1",)  # the slot's writes keep them
    assert store.clear_active("mnist", "job-1")
    cleared = store.get_active("mnist")
    assert cleared is not None and (cleared.job_id, cleared.others) == ("job-2", ())

    store.track_active("mnist", "job-1", "n1", T0 + 4)
    store.track_active("mnist", "job-3", "n3", T0 + 5)
    assert store.clear_active("mnist", "job-2")  # the holder ended: the first other holds
    promoted = store.get_active("mnist")
    assert promoted is not None
    assert (promoted.job_id, promoted.others, promoted.lease_until) == ("job-1", ("job-3",), None)
    assert promoted.revision == 3
    assert store.clear_active("mnist", "job-1") and store.clear_active("mnist", "job-3")
    assert store.get_active("mnist") is None
    assert not store.clear_active("mnist", "job-3")

    store.track_active("other", "job-9", "n9", T0)  # no record: it holds the slot
    holder = store.get_active("other")
    assert holder is not None
    assert (holder.job_id, holder.job_name, holder.lease_until, holder.others) == (
        "job-9",
        "n9",
        None,
        (),
    )


# --------------------------------------------------------------------------- retention


def test_closed_windows_and_their_items_are_swept_after_their_retention(
    store_backing: Any, clock: Clock
) -> None:
    """5,000 window adds with a one-day retention; three days later they are gone, except the
    windows that are not closed (their runs are not recorded yet)."""
    store = store_backing.open(clock=clock, retention_seconds=DAY)
    routes = [f"r{n}" for n in range(10)]

    def fill(n: int) -> None:  # one route per thread: 500 objects in its window
        for i in range(500):
            store.add_to_window(routes[n], item(f"{routes[n]}-{i:03d}.csv"), T0 + i * 0.1)

    in_threads(len(routes), fill)
    closed = []
    for n, route in enumerate(routes):
        (window,) = store.list_windows(route)
        assert window.count == 500
        assert store.claim_window(window.window_id, "flush", T0 + 100 + n, 60) is not None
        assert store.close_window(window.window_id, "flush", f"jobs/{route}", now=T0 + 100 + n)
        closed.append(window.window_id)
    first = store.get_window(closed[0])
    assert first is not None and first.expire_at == T0 + 100 + DAY
    still_open = store.add_to_window("open-route", item("late.csv"), T0 + 50)
    closing = store.add_to_window("closing-route", item("slow.csv"), T0 + 50)
    assert store.claim_window(closing.window_id, "slow-flush", T0 + 100, 60) is not None
    store.record_decision(entry(T0, "skipped"), DAY)
    assert store_backing.count("window_items") == 5002
    assert store_backing.count("windows") == 12

    assert store.purge_expired(T0 + 100 + DAY - 1) == 1  # only the decision
    assert store_backing.count("window_items") == 5002

    now = T0 + 3 * DAY
    swept = []
    while swept[-1:] != [0]:
        swept.append(store.purge_expired(now, limit=1000))
        assert swept[-1] <= 1000
    assert sum(swept) == 5000 + 10
    assert store_backing.count("window_items") == 2
    assert store_backing.count("windows") == 2
    assert [store.get_window(w) for w in closed] == [None] * len(closed)
    assert [w.state for w in store.list_windows("open-route")] == [WindowState.OPEN]
    assert [w.state for w in store.list_windows("closing-route")] == [WindowState.CLOSING]
    assert [i.object for i in store.window_items(still_open.window_id)] == [
        "data/2026-11-27/late.csv"
    ]
    assert len(store.window_items(closing.window_id)) == 1
    # once its record is gone, an object of a swept window counts as new
    assert store.add_to_window("r0", item("r0-000.csv"), now).added


def test_a_window_expires_from_its_close_not_from_its_objects(store: StateStore) -> None:
    window_id = store.add_to_window("mnist", item("a.csv"), T0).window_id
    assert store.claim_window(window_id, "flush", T0 + 10 * DAY, 60) is not None
    assert store.purge_expired(T0 + 100 * DAY) == 0  # CLOSING: its run is not recorded yet
    assert store.close_window(window_id, "flush", "jobs/x", now=T0 + 100 * DAY)

    closed = store.get_window(window_id)
    assert closed is not None and closed.expire_at is not None
    retention = closed.expire_at - (T0 + 100 * DAY)
    assert retention > 0
    assert store.purge_expired(closed.expire_at - 1) == 0
    assert store.purge_expired(closed.expire_at) == 2  # the item, then the window
    assert store.get_window(window_id) is None


# --------------------------------------------------------------------------- decisions


def entry(
    moment: float,
    outcome: str = "submitted",
    *,
    route: str = "mnist",
    obj: str = "data/a.csv",
    generation: str = "1",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "time": moment,
        "outcome": outcome,
        "reason": "",
        "route": route,
        "run_key": f"gs://ct-bucket/{obj}#{generation}",
        "job_id": f"{route}-data-{generation}",
        "job": "",
        "trigger": {
            "kind": "data",
            "bucket": "ct-bucket",
            "object": obj,
            "generation": generation,
            "event_id": f"ev-{moment}",
        },
        "window_id": "",
        **extra,
    }


def test_decisions_by_object_newest_first(store: StateStore, clock: Clock) -> None:
    now = clock()
    ids = [
        store.record_decision(entry(now - 30, "submitted", generation="1"), 7 * DAY),
        store.record_decision(entry(now - 20, "duplicate", generation="1"), 7 * DAY),
        store.record_decision(entry(now - 10, "submitted", generation="2"), 7 * DAY),
        store.record_decision(entry(now - 5, obj="data/b.csv"), 7 * DAY),
    ]
    assert all("/" not in i for i in ids) and len(set(ids)) == 4

    found = store.decisions_for_object("gs://ct-bucket/data/a.csv", limit=10)
    assert [(d["outcome"], d["trigger"]["generation"]) for d in found] == [
        ("submitted", "2"),
        ("duplicate", "1"),
        ("submitted", "1"),
    ]
    assert found[0]["id"] == ids[2] and found[0]["time"] == now - 10
    assert found[0]["run_key"] == "gs://ct-bucket/data/a.csv#2"
    assert [d["id"] for d in store.decisions_for_object("gs://ct-bucket/data/a.csv", limit=2)] == [
        ids[2],
        ids[1],
    ]
    assert store.decisions_for_object("gs://ct-bucket/data/none.csv") == []


def test_decision_ids_spread_writes_and_listing_is_still_newest_first(
    store: StateStore, clock: Clock
) -> None:
    """Ids do not follow time (no hotspot at one end of the key range); the order of a listing
    comes from the decisions' time, the id breaking ties the same way in every store."""
    now = clock()
    moments = [now - 50 + n for n in range(40)]
    ids = [store.record_decision(entry(m, "skipped", obj=f"data/{m}.csv"), DAY) for m in moments]

    assert len(set(ids)) == 40
    assert sorted(ids) != ids and sorted(ids) != ids[::-1]
    assert len({i[:4] for i in ids}) > 20  # spread over the key range, not one neighbourhood
    found = store.list_decisions(since=now - 60)
    assert [d["time"] for d in found] == moments[::-1]
    assert [d["id"] for d in found] == ids[::-1]
    same = [
        store.record_decision(entry(now, "skipped", obj=f"data/s{n}.csv"), DAY) for n in range(5)
    ]
    tied = [d["id"] for d in store.list_decisions(since=now)]
    assert tied == sorted(same, reverse=True)


def test_decisions_by_time_route_and_outcome(store: StateStore, clock: Clock) -> None:
    now = clock()
    base = now - 600
    for n, (route, outcome) in enumerate(
        [
            ("mnist", "submitted"),
            ("mnist", "skipped"),
            ("other", "submitted"),
            ("mnist", "failed"),
            ("other", "rejected"),
            ("mnist", "submitted"),
        ]
    ):
        store.record_decision(entry(base + n * 60, outcome, route=route, obj=f"data/{n}.csv"), DAY)

    def times(found: list[dict[str, Any]]) -> list[int]:
        return [round((d["time"] - base) / 60) for d in found]

    assert times(store.list_decisions(since=base)) == [5, 4, 3, 2, 1, 0]
    assert times(store.list_decisions(since=base + 60, until=base + 240)) == [3, 2, 1]
    assert times(store.list_decisions(since=base + 60.001)) == [5, 4, 3, 2]
    assert times(store.list_decisions(since=base, route="mnist")) == [5, 3, 1, 0]
    assert times(store.list_decisions(since=base, outcome="submitted")) == [5, 2, 0]
    assert times(store.list_decisions(since=base, route="mnist", outcome=Outcome.SUBMITTED)) == [
        5,
        0,
    ]
    assert times(store.list_decisions(since=base, route="mnist", limit=2)) == [5, 3]
    assert store.list_decisions(since=now + 1) == []


def test_expired_decisions_are_hidden_and_purged(store: StateStore, clock: Clock) -> None:
    now = clock()
    gone = store.record_decision(entry(now - 2 * DAY, "submitted"), DAY)
    kept = store.record_decision(entry(now - 60, "duplicate"), DAY)
    soon = store.record_decision(entry(now - 60, "skipped", obj="data/c.csv"), 120)

    assert [d["id"] for d in store.decisions_for_object("gs://ct-bucket/data/a.csv")] == [kept]
    assert {d["id"] for d in store.list_decisions(since=now - 3 * DAY)} == {kept, soon}

    assert store.purge_expired(now) == 1
    assert store.purge_expired(now) == 0
    assert store.purge_expired(now + 61) == 1  # "soon" expires at now + 60
    assert [d["id"] for d in store.list_decisions(since=now - 3 * DAY, until=now + 1)] == [kept]
    assert gone not in {d["id"] for d in store.list_decisions(since=0)}


def test_a_decision_entry_from_a_decision_round_trips(store: StateStore) -> None:
    trigger = Trigger(
        kind=Kind.DATA,
        source="eventarc",
        event_id="e-1",
        bucket="ct-bucket",
        object="data/x.csv",
        generation="42",
        size=7,
        metadata={"k": "v"},
    )
    decision = Decision(
        outcome=Outcome.DUPLICATE,
        reason="a run with this run key already exists",
        route="mnist",
        run_key="gs://ct-bucket/data/x.csv#42",
        job_id="mnist-data-x-abc",
        job_name="projects/p/locations/r/pipelineJobs/mnist-data-x-abc",
        trigger=trigger,
    )
    record_id = store.record_decision(decision_entry(decision, time=T0, window_id="w1"), DAY)

    (found,) = store.decisions_for_object("gs://ct-bucket/data/x.csv")
    assert found["id"] == record_id
    assert found["outcome"] == "duplicate" and found["window_id"] == "w1"
    assert found["job"] == decision.job_name
    assert found["trigger"] == {
        "kind": "data",
        "source": "eventarc",
        "event_id": "e-1",
        "bucket": "ct-bucket",
        "object": "data/x.csv",
        "generation": "42",
        "size": 7,
    }
    assert found["expire_at"].endswith("Z")


def test_route_names_that_could_break_keys_are_refused(store: StateStore) -> None:
    for route in ("a/b", "", "../x"):
        with pytest.raises(ValueError, match="invalid route name"):
            store.add_to_window(route, item("a.csv"), T0)


# --------------------------------------------------------------------------- the factory


def test_open_store_uses_the_state_dir(tmp_path: Any) -> None:
    opened = open_store(Config(routes=(), store="sqlite", state_dir=str(tmp_path / "s")))
    assert isinstance(opened, SQLiteStore)
    assert opened.path == os.path.join(str(tmp_path / "s"), "state.sqlite3")
    assert isinstance(opened, StateStore)


def test_two_processes_share_one_sqlite_file(tmp_path: Any) -> None:
    """Two function servers on one machine: claims stay exclusive across processes."""
    path = tmp_path / "state.sqlite3"
    window_id = SQLiteStore(path).add_to_window("mnist", item("a.csv"), T0).window_id
    script = (
        "import sys\n"
        "from retrain_trigger.store import SQLiteStore\n"
        "s = SQLiteStore(sys.argv[1])\n"
        "print('won' if s.claim_window(sys.argv[2], sys.argv[3], 1800000060.0, 60) else 'lost')\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(path), window_id, f"proc-{n}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    answers = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert answers == ["lost", "won"]


def test_the_store_package_does_not_import_firestore() -> None:
    code = "import sys, retrain_trigger.store\nprint('google.cloud.firestore' in sys.modules)\n"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


_VERSION_1 = """
CREATE TABLE windows (window_id TEXT PRIMARY KEY, route TEXT NOT NULL, state TEXT NOT NULL,
    opened_at REAL NOT NULL, last_event_at REAL NOT NULL, item_count INTEGER NOT NULL DEFAULT 0,
    owner TEXT NOT NULL DEFAULT '', lease_until REAL, claimed_at REAL,
    claims INTEGER NOT NULL DEFAULT 0, manifest_uri TEXT NOT NULL DEFAULT '',
    run_key TEXT NOT NULL DEFAULT '', job_id TEXT NOT NULL DEFAULT '',
    job_name TEXT NOT NULL DEFAULT '', closed_at REAL);
CREATE TABLE window_items (route TEXT NOT NULL, item_key TEXT NOT NULL,
    window_id TEXT NOT NULL REFERENCES windows (window_id), seq INTEGER NOT NULL,
    bucket TEXT NOT NULL, object TEXT NOT NULL, generation TEXT NOT NULL, size INTEGER,
    event_id TEXT NOT NULL DEFAULT '', event_time TEXT NOT NULL DEFAULT '',
    added_at REAL NOT NULL, PRIMARY KEY (route, item_key));
CREATE TABLE pending (route TEXT PRIMARY KEY, run_key TEXT NOT NULL,
    request_json TEXT NOT NULL, queued_at REAL NOT NULL);
CREATE TABLE active (route TEXT PRIMARY KEY, job_id TEXT NOT NULL,
    job_name TEXT NOT NULL DEFAULT '', started_at REAL NOT NULL);
CREATE TABLE decisions (id TEXT PRIMARY KEY, time REAL NOT NULL, expire_at REAL NOT NULL,
    route TEXT NOT NULL DEFAULT '', outcome TEXT NOT NULL DEFAULT '',
    object_key TEXT NOT NULL DEFAULT '', run_key TEXT NOT NULL DEFAULT '',
    job_id TEXT NOT NULL DEFAULT '', window_id TEXT NOT NULL DEFAULT '', entry TEXT NOT NULL);
INSERT INTO windows (window_id, route, state, opened_at, last_event_at, item_count, owner,
    closed_at) VALUES ('mnist__old', 'mnist', 'CLOSED', 1800000000, 1800000000, 1, 'f',
    1800000100);
INSERT INTO windows (window_id, route, state, opened_at, last_event_at, item_count)
    VALUES ('mnist__open', 'mnist', 'OPEN', 1800000200, 1800000200, 1);
INSERT INTO window_items VALUES ('mnist', 'gs://b/o#1', 'mnist__old', 0, 'b', 'o', '1', 1, '',
    '', 1800000000);
INSERT INTO window_items VALUES ('mnist', 'gs://b/p#1', 'mnist__open', 0, 'b', 'p', '1', 1, '',
    '', 1800000200);
INSERT INTO active VALUES ('mnist', 'job-1', 'projects/p/jobs/job-1', 1800000000);
PRAGMA user_version = 1;
"""


def test_a_version_1_sqlite_file_is_migrated(tmp_path: Any) -> None:
    path = tmp_path / "state.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(_VERSION_1)
    conn.close()

    store = SQLiteStore(path, retention_seconds=DAY)
    old = store.get_window("mnist__old")
    assert old is not None and old.expire_at == T0 + 100 + DAY
    still_open = store.get_window("mnist__open")
    assert still_open is not None and still_open.expire_at is None
    active = store.get_active("mnist")
    assert active is not None
    assert (active.job_id, active.lease_until, active.others, active.revision) == (
        "job-1",
        None,
        (),
        0,
    )
    assert store.set_active("mnist", "job-2", "", T0 + 5, expect_revision=0, lease_seconds=60)
    assert store.purge_expired(T0 + 100 + DAY) == 2
    assert store.get_window("mnist__old") is None
    assert [i.object for i in store.window_items("mnist__open")] == ["p"]
    with sqlite3.connect(path) as conn:
        # Migrated to the current version (2 added expiry and reservations, 3 run outcomes).
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


# --------------------------------------------------------------------------- pauses


def test_a_pause_is_recorded_read_by_another_instance_and_cleared(
    store: StateStore, twin: StateStore
) -> None:
    assert store.get_pause("churn") is None
    assert store.paused_routes() == {}
    assert store.clear_pause("churn") is False

    made = store.set_pause("churn", "bad export upstream", "ops@example.com", T0)
    assert (made.route, made.reason, made.by, made.paused_at) == (
        "churn",
        "bad export upstream",
        "ops@example.com",
        T0,
    )
    assert twin.get_pause("churn") == made
    assert twin.get_pause("mnist") is None
    assert list(twin.paused_routes()) == ["churn"]

    again = twin.set_pause("churn", "still broken", "other", T0 + 60)
    assert store.get_pause("churn") == again
    store.set_pause("mnist", "", "ops", T0 + 1)
    assert sorted(store.paused_routes()) == ["churn", "mnist"]

    assert twin.clear_pause("churn") is True
    assert store.get_pause("churn") is None
    assert store.clear_pause("churn") is False
    assert list(store.paused_routes()) == ["mnist"]


@pytest.mark.parametrize("route", ["", "a/b", "x" * 200])
def test_a_pause_refuses_a_malformed_route_name(store: StateStore, route: str) -> None:
    with pytest.raises(ValueError):
        store.set_pause(route, "r", "me", T0)
