"""The contract of ``page_decisions`` (the status page's timeline), for SQLite and Firestore.

A page is newest first; its token leads to the next page, ``None`` after the last; filters by
route, outcome and object substring combine; expired decisions never show; malformed tokens and
sizes are refused with ``ValueError`` before the store is read.
"""

from __future__ import annotations

from typing import Any

import pytest

from retrain_trigger.store import StateStore
from retrain_trigger.store.base import MAX_OBJECT_FILTER, MAX_PAGE_SIZE, page_token_of
from tests.clock import T0, Clock

pytestmark = pytest.mark.emulator

DAY = 86400.0


def entry(
    moment: float, outcome: str = "submitted", *, route: str = "mnist", obj: str = "data/a.csv"
) -> dict[str, Any]:
    return {
        "time": moment,
        "outcome": outcome,
        "reason": "",
        "route": route,
        "run_key": f"gs://ct-bucket/{obj}#1",
        "job_id": "",
        "trigger": {"kind": "data", "bucket": "ct-bucket", "object": obj, "generation": "1"},
        "window_id": "",
    }


def all_pages(store: StateStore, **filters: Any) -> list[list[str]]:
    """Every page's object names, following the tokens to the end."""
    pages: list[list[str]] = []
    token = None
    for _ in range(100):
        found, token = store.page_decisions(page_token=token, **filters)
        pages.append([d["trigger"]["object"] for d in found])
        if token is None:
            return pages
    raise AssertionError("the pages never ended")


def test_pages_are_newest_first_and_end_with_no_token(store: StateStore) -> None:
    for n in range(7):
        store.record_decision(entry(T0 - 100 + n, obj=f"data/{n}.csv"), DAY)

    assert all_pages(store, limit=3) == [
        ["data/6.csv", "data/5.csv", "data/4.csv"],
        ["data/3.csv", "data/2.csv", "data/1.csv"],
        ["data/0.csv"],
    ]
    found, token = store.page_decisions(limit=7)
    assert len(found) == 7 and token is None  # exactly full: nothing follows
    first, token = store.page_decisions(limit=2)
    assert token == page_token_of(first[-1]["time"], first[-1]["id"])
    assert {"id", "expire_at", "outcome", "route", "time"} <= set(first[0])
    assert first[0]["time"] == T0 - 94
    assert store.page_decisions() == (store.page_decisions(limit=7)[0], None)  # 50 by default


def test_filters_combine_and_page_alike(store: StateStore) -> None:
    rows = [
        ("mnist", "submitted", "data/2026-11-27/part-0.csv"),
        ("mnist", "skipped", "data/2026-11-27/_SUCCESS"),
        ("other", "submitted", "data/2026-11-27/part-1.csv"),
        ("mnist", "batched", "data/2026-11-28/part-0.csv"),
        ("mnist", "submitted", "data/2026-11-28/part-1.csv"),
        ("other", "rejected", "logs/x.txt"),
    ]
    for n, (route, outcome, obj) in enumerate(rows):
        store.record_decision(entry(T0 - 60 + n, outcome, route=route, obj=obj), DAY)
    code = {
        "time": T0 - 1,
        "outcome": "submitted",
        "route": "mnist",
        "run_key": "commit 0123",
        "trigger": {"kind": "code", "commit_sha": "2026-11-27"},
    }
    store.record_decision(code, DAY)

    def objects(**filters: Any) -> list[str]:
        found, token = store.page_decisions(limit=50, **filters)
        assert token is None
        return [(d.get("trigger") or {}).get("object", "code") for d in found]

    assert objects(route="mnist") == [
        "code",
        "data/2026-11-28/part-1.csv",
        "data/2026-11-28/part-0.csv",
        "data/2026-11-27/_SUCCESS",
        "data/2026-11-27/part-0.csv",
    ]
    assert objects(outcome="submitted") == [
        "code",
        "data/2026-11-28/part-1.csv",
        "data/2026-11-27/part-1.csv",
        "data/2026-11-27/part-0.csv",
    ]
    # the substring is matched in gs://bucket/object only: the code change's sha is not an object
    assert objects(object_contains="2026-11-27") == [
        "data/2026-11-27/part-1.csv",
        "data/2026-11-27/_SUCCESS",
        "data/2026-11-27/part-0.csv",
    ]
    assert objects(object_contains="gs://ct-bucket/logs/") == ["logs/x.txt"]
    assert objects(object_contains="PART") == []  # case-sensitive, as object names are
    assert objects(route="mnist", outcome="submitted", object_contains="part-") == [
        "data/2026-11-28/part-1.csv",
        "data/2026-11-27/part-0.csv",
    ]
    assert objects(route="nobody") == []
    assert all_pages(store, object_contains="part-", limit=2) == [
        ["data/2026-11-28/part-1.csv", "data/2026-11-28/part-0.csv"],
        ["data/2026-11-27/part-1.csv", "data/2026-11-27/part-0.csv"],
    ]


def test_markup_and_wildcards_in_the_object_filter_are_plain_text(store: StateStore) -> None:
    names = ["data/<b>bold</b>.csv", "data/100%_done.csv", "data/100x_done.csv", "data/a'b.csv"]
    for n, name in enumerate(names):
        store.record_decision(entry(T0 - 10 + n, obj=name), DAY)

    def objects(needle: str) -> list[str]:
        return [d["trigger"]["object"] for d in store.page_decisions(object_contains=needle)[0]]

    assert objects("<b>") == ["data/<b>bold</b>.csv"]
    assert objects("%_") == ["data/100%_done.csv"]  # no LIKE wildcards
    assert objects("a'b") == ["data/a'b.csv"]
    assert objects("') OR 1=1 --") == []


def test_expired_decisions_never_show(store: StateStore, clock: Clock) -> None:
    store.record_decision(entry(T0 - 2 * DAY, obj="data/old.csv"), DAY)
    store.record_decision(entry(T0 - 30, obj="data/new.csv"), DAY)

    assert all_pages(store) == [["data/new.csv"]]
    clock.now = T0 + DAY
    assert all_pages(store) == [[]]


def test_a_token_outlives_newer_decisions(store: StateStore) -> None:
    for n in range(4):
        store.record_decision(entry(T0 - 100 + n, obj=f"data/{n}.csv"), DAY)
    _first, token = store.page_decisions(limit=2)
    store.record_decision(entry(T0 - 1, obj="data/newest.csv"), DAY)

    rest, end = store.page_decisions(limit=2, page_token=token)
    assert [d["trigger"]["object"] for d in rest] == ["data/1.csv", "data/0.csv"]
    assert end is None


def test_decisions_of_one_instant_are_each_paged_once(store: StateStore) -> None:
    """Ids are random, so time orders the pages and the id breaks ties: a page boundary inside
    a run of equal times neither repeats nor skips a decision."""
    for n in range(5):
        store.record_decision(entry(T0 - 10, obj=f"data/same-{n}.csv"), DAY)
    store.record_decision(entry(T0 - 20, obj="data/older.csv"), DAY)

    pages = all_pages(store, limit=2)
    seen = [name for page in pages for name in page]
    assert sorted(seen[:5]) == [f"data/same-{n}.csv" for n in range(5)]
    assert seen[5:] == ["data/older.csv"]
    assert [len(page) for page in pages] == [2, 2, 2]


@pytest.mark.parametrize(
    "token",
    [
        "x",
        "1800000000.0~" + "a" * 16,
        "1800000000.0~" + "g" * 16 + "-1800000000000",
        "-1.0~" + "a" * 16 + "-1800000000000",
        "nan~" + "a" * 16 + "-1800000000000",
        "1e400~" + "a" * 16 + "-1800000000000",
        "../../etc/passwd",
        "0000000000000-zzzzzzzzzzzz",
        "1" * 13 + "-" + "a" * 13,
        "1" * 13 + "-" + "A" * 12,
        "1" * 10_000,
        "1" * 13 + "-" + "a" * 12 + "\n",
    ],
)
def test_malformed_tokens_are_refused(store: StateStore, token: str) -> None:
    with pytest.raises(ValueError, match="invalid page token"):
        store.page_decisions(page_token=token)


@pytest.mark.parametrize("limit", [0, -1, MAX_PAGE_SIZE + 1, True])
def test_page_sizes_out_of_range_are_refused(store: StateStore, limit: Any) -> None:
    with pytest.raises(ValueError, match=f"page size must be 1 to {MAX_PAGE_SIZE}"):
        store.page_decisions(limit=limit)


def test_an_oversized_object_filter_is_refused(store: StateStore) -> None:
    with pytest.raises(ValueError, match="object filter must be text"):
        store.page_decisions(object_contains="a" * (MAX_OBJECT_FILTER + 1))
    assert store.page_decisions(object_contains="a" * MAX_OBJECT_FILTER) == ([], None)


def test_a_page_may_stop_early_and_the_tokens_still_find_every_match(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Firestore filters objects after reading, at most PAGE_SCAN_BUDGET documents a page: a
    rare match across many decisions comes in short (even empty) pages, never lost."""
    from retrain_trigger.store import firestore

    monkeypatch.setattr(firestore, "PAGE_SCAN_BUDGET", 3)
    for n in range(10):
        name = f"data/rare-{n}.csv" if n in (1, 8) else f"data/common-{n}.csv"
        store.record_decision(entry(T0 - 100 + n, obj=name), DAY)

    pages = all_pages(store, object_contains="rare-", limit=5)
    assert [name for page in pages for name in page] == ["data/rare-8.csv", "data/rare-1.csv"]
    assert all(len(page) <= 5 for page in pages)
    if isinstance(store, firestore.FirestoreStore):  # 3 documents a page, 10 in all
        assert pages == [["data/rare-8.csv"], [], ["data/rare-1.csv"], []]
