"""What only the Firestore store does: contention retried with jittered exponential backoff within
a deadline, through its emulator. The contract both stores keep is in test_store_contract.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from retrain_trigger.store import StoreError
from retrain_trigger.store.firestore import INITIAL_BACKOFF, MAXIMUM_BACKOFF, FirestoreStore

pytestmark = pytest.mark.emulator


class Timer:
    """A monotonic clock that only the recorded sleeps advance."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def project(firestore_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", firestore_emulator.host)
    name = f"fs-{uuid.uuid4().hex[:12]}"
    yield name
    firestore_emulator.clear(name)


def make_store(project: str, timer: Timer, *, jitter: float, deadline: float) -> FirestoreStore:
    return FirestoreStore(
        project=project,
        deadline=deadline,
        sleep=timer.sleep,
        jitter=lambda: jitter,
        monotonic=timer,
    )


def transact(store: FirestoreStore, body: Any, ref: Any) -> Any:
    """``body`` in transactions, retried as the store retries them."""
    return store._retrying(lambda: store._in_transaction(body, ref), "transaction")


def failing(times: int, error: Exception) -> Any:
    """A transaction body that fails ``times`` times, then writes a document."""
    calls: list[int] = []

    def body(tx: Any, ref: Any) -> int:
        calls.append(1)
        ref.get(transaction=tx)
        if len(calls) <= times:
            raise error
        tx.set(ref, {"attempts": len(calls)})
        return len(calls)

    return body


def test_contention_is_retried_with_jittered_exponential_backoff(project: str) -> None:
    from google.api_core import exceptions

    timer = Timer()
    store = make_store(project, timer, jitter=0.5, deadline=30)
    ref = store._client.collection("t").document("d")

    body = failing(6, exceptions.Aborted("Transaction lock timeout."))
    assert transact(store, body, ref) == 7

    assert timer.sleeps == [0.5 * min(INITIAL_BACKOFF * 2**n, MAXIMUM_BACKOFF) for n in range(6)]
    assert ref.get().to_dict() == {"attempts": 7}


def test_a_racing_create_and_unavailability_are_retried_too(project: str) -> None:
    from google.api_core import exceptions

    timer = Timer()
    store = make_store(project, timer, jitter=1.0, deadline=30)
    ref = store._client.collection("t").document("d")

    assert transact(store, failing(1, exceptions.AlreadyExists("exists")), ref) == 2
    assert transact(store, failing(2, exceptions.ServiceUnavailable("down")), ref) == 3
    assert len(timer.sleeps) == 3


def test_contention_past_the_deadline_is_a_retryable_store_error(project: str) -> None:
    from google.api_core import exceptions

    timer = Timer()
    store = make_store(project, timer, jitter=1.0, deadline=2.0)
    ref = store._client.collection("t").document("d")

    with pytest.raises(
        StoreError, match=r"transaction failed 3 times in 1\.5s \(contended or unavailable\)"
    ) as raised:
        transact(store, failing(100, exceptions.Aborted("Transaction lock timeout.")), ref)
    assert timer.sleeps == [0.5, 1.0]  # the next pause (2 s) would end past the deadline
    assert raised.value.retryable and raised.value.status == 503
    assert not ref.get().exists


def test_errors_an_operator_must_fix_are_not_retried(project: str) -> None:
    from google.api_core import exceptions

    timer = Timer()
    store = make_store(project, timer, jitter=1.0, deadline=30)
    ref = store._client.collection("t").document("d")

    with pytest.raises(StoreError, match="Firestore: 403 no access") as raised:
        transact(store, failing(1, exceptions.PermissionDenied("no access")), ref)
    assert not raised.value.retryable
    assert timer.sleeps == []
    with pytest.raises(LookupError, match="its own"):  # what the body raises passes through
        transact(store, failing(1, LookupError("its own")), ref)


def test_a_conditional_write_that_lost_a_race_reads_again(project: str) -> None:
    timer = Timer()
    store = make_store(project, timer, jitter=0.5, deadline=30)
    ref = store._client.collection("t").document("d")
    seen: list[dict[str, Any] | None] = []

    def decide(data: dict[str, Any] | None) -> tuple[Any, str]:
        seen.append(data)
        if len(seen) == 1:  # another instance writes between this read and this write
            ref.set({"holder": "other"})
        if data is None:
            return ("put", {"holder": "me"}), "created"
        return None, f"held by {data['holder']}"

    assert store._conditional(ref, decide) == "held by other"
    assert seen == [None, {"holder": "other"}]
    assert timer.sleeps == [0.5 * INITIAL_BACKOFF]
    assert ref.get().to_dict() == {"holder": "other"}

    seen.clear()
    ref.set({"holder": "old"})

    def update(data: dict[str, Any] | None) -> tuple[Any, int]:
        seen.append(data)
        if len(seen) == 1:
            ref.update({"holder": "newer"})
        return ("update", {"holder": f"after {data['holder'] if data else None}"}), len(seen)

    assert store._conditional(ref, update) == 2
    assert ref.get().to_dict() == {"holder": "after newer"}  # never "after old"


def test_an_object_whose_window_ttl_deleted_first_is_still_a_duplicate(project: str) -> None:
    """TTL policies delete in no particular order: an object's window may go before it."""
    from retrain_trigger.store import WindowItem, WindowState

    store = FirestoreStore(project=project)
    item = WindowItem(bucket="b", object="data/a.csv", generation="1")
    first = store.add_to_window("mnist", item, 1_800_000_000.0)
    store._windows.document(first.window_id).delete()  # what the TTL policy does

    again = store.add_to_window("mnist", item, 1_800_000_100.0)
    assert (again.added, again.window_id, again.state) == (
        False,
        first.window_id,
        WindowState.CLOSED,
    )


# --------------------------------------------------------------------------- windows at scale


def test_adding_objects_writes_only_their_item_documents(project: str) -> None:
    """No document that every addition writes: the route's pointer and the window stay as they
    were opened while objects keep joining, from two instances at once."""
    import threading

    from retrain_trigger.store import WindowItem

    stores = [FirestoreStore(project=project), FirestoreStore(project=project)]
    now = 1_800_000_000.0
    first = stores[0].add_to_window("mnist", WindowItem("b", "data/0.csv", "1", size=1), now)
    route_ref = stores[0]._routes.document("mnist")
    window_ref = stores[0]._windows.document(first.window_id)
    before = (route_ref.get().update_time, window_ref.get().update_time)

    def add(i: int) -> None:
        for n in range(10):
            info = stores[i].add_to_window(
                "mnist", WindowItem("b", f"data/{i}-{n}.csv", "1", size=1), now + n
            )
            assert info.added and info.window_id == first.window_id

    threads = [threading.Thread(target=add, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert (route_ref.get().update_time, window_ref.get().update_time) == before
    window = stores[1].get_window(first.window_id)
    assert window is not None and (window.count, window.size_bytes) == (21, 21)
    assert sum(1 for _ in stores[0]._items.stream()) == 21


def test_sixteen_instances_adding_at_once_need_no_retry(project: str) -> None:
    """Additions hold shared locks on the route's pointer only: 16 instances adding to one
    window at once never contend (no backoff), and every object lands once."""
    import threading

    from retrain_trigger.store import WindowItem

    sleeps: list[float] = []
    stores = [FirestoreStore(project=project, sleep=sleeps.append) for _ in range(16)]
    now = 1_800_000_000.0
    first = stores[0].add_to_window("mnist", WindowItem("b", "data/first.csv", "1"), now)
    barrier = threading.Barrier(16)
    seen: list[str] = []

    def add(i: int) -> None:
        barrier.wait()
        for n in range(8):
            item = WindowItem("b", f"data/{i:02d}-{n}.csv", "1")
            seen.append(stores[i].add_to_window("mnist", item, now + n).window_id)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert seen == [first.window_id] * 128
    window = stores[0].get_window(first.window_id)
    assert window is not None and window.count == 129
    assert sleeps == []


def test_a_claimed_window_records_its_tally_once(project: str) -> None:
    from retrain_trigger.store import WindowItem

    store = FirestoreStore(project=project)
    now = 1_800_000_000.0
    for n in range(3):
        info = store.add_to_window("mnist", WindowItem("b", f"d/{n}", "1", size=2), now + n)
    window_id = info.window_id
    data = store._windows.document(window_id).get().to_dict()
    assert "count" not in data and "last_event_at" not in data  # open: read from the items

    assert store.claim_window(window_id, "flush", now + 60, 30) is not None
    data = store._windows.document(window_id).get().to_dict()
    assert (data["count"], data["size_bytes"], data["last_event_at"]) == (3, 6, now + 2)
    assert data["counted"] is True


def test_decision_ids_are_not_ordered_by_time(project: str) -> None:
    store = FirestoreStore(project=project)
    now = 1_800_000_000.0
    ids = [
        store.record_decision({"time": now + n, "outcome": "skipped", "route": "r"}, 3600)
        for n in range(30)
    ]
    stored = [doc.id for doc in store._decisions.stream()]  # key order
    assert sorted(stored) == stored and stored != ids and stored != ids[::-1]
    listed = store.list_decisions(since=now, route="r", limit=5)
    assert [d["id"] for d in listed] == ids[::-1][:5]


def test_items_stream_across_queries_in_order(
    project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each streamed query reads at most ITEM_STREAM_PAGE items; the next one starts after the
    last item read, so the manifest and the expiry stamps see every item once, in order."""
    from retrain_trigger.store import WindowItem
    from retrain_trigger.store import firestore as firestore_module

    monkeypatch.setattr(firestore_module, "ITEM_STREAM_PAGE", 3)
    store = FirestoreStore(project=project)
    now = 1_800_000_000.0
    names = [f"d/{n:02d}.csv" for n in range(10)]
    for n, name in enumerate(names):
        window_id = store.add_to_window("mnist", WindowItem("b", name, "1"), now + n).window_id
    streamed = [i.object for i in store.iter_window_items(window_id, page_size=1)]
    assert streamed == names

    assert store.claim_window(window_id, "flush", now + 60, 30) is not None
    assert store.close_window(window_id, "flush", "projects/p/jobs/j", now=now + 61)
    stamped = [d.to_dict().get("expire_at") for d in store._items.stream()]
    assert len(stamped) == 10 and None not in stamped
