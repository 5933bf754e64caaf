"""The run-outcome part of the store contract, for SQLite and Firestore (its emulator): run
records ended exactly once, paging newest first, the flush's reconciliation list and champion
history."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from retrain_trigger.store import SQLiteStore
from retrain_trigger.store.base import ChampionChange, RunEnd, RunRecord
from tests.clock import T0, Clock
from tests.integration.test_store_contract import in_threads, twin

pytestmark = pytest.mark.emulator
__all__ = ["twin"]  # the contract suite's fixture, shared (clock and store: conftest.py)

TTL = 30 * 86400.0


def run(job_id: str, *, route: str = "mnist", at: float = T0, **fields: Any) -> RunRecord:
    values: dict[str, Any] = {
        "route": route,
        "job_id": job_id,
        "job_name": f"projects/p/locations/r/pipelineJobs/{job_id}",
        "state": "PENDING",
        "submitted_at": at,
        "ended_at": None,
        "duration_s": None,
        "error": None,
        "failed_task": None,
        "parameters": {"data_uri": "gs://b/data/x.csv"},
        "object_uri": "gs://b/data/x.csv",
        "trace": "0af7651916cd43dd8448eb211c80319c",
        "check_after": at + 3600,
    }
    values.update(fields)
    return RunRecord(**values)


def test_a_run_is_recorded_once_and_read_back(store: Any) -> None:
    first = store.record_run(run("mnist-data-a"), TTL)
    again = store.record_run(run("mnist-data-a", at=T0 + 5, parameters={}), TTL)
    assert again == first
    got = store.get_run("mnist-data-a")
    assert got is not None and got.state == "PENDING" and got.submitted_at == T0
    assert got.parameters == {"data_uri": "gs://b/data/x.csv"}
    assert got.expire_at == T0 + TTL
    assert store.get_run("mnist-data-unknown") is None


def test_a_run_ends_once_under_redelivery(store: Any, twin: Any) -> None:
    store.record_run(run("mnist-data-a"), TTL)
    end = RunEnd(
        "mnist-data-a",
        "FAILED",
        T0 + 125.5,
        error="task train failed",
        failed_task="train",
        reporter="exit-handler",
    )
    ended, changed = store.end_run(end, TTL)
    assert changed
    assert (ended.state, ended.duration_s, ended.error, ended.failed_task) == (
        "FAILED",
        125.5,
        "task train failed",
        "train",
    )
    assert ended.check_after is None and ended.reporter == "exit-handler"
    # The same end again, and a different end later: the first end stands.
    assert twin.end_run(end, TTL) == (ended, False)
    late = RunEnd("mnist-data-a", "SUCCEEDED", T0 + 999, reporter="reconcile")
    assert store.end_run(late, TTL) == (ended, False)
    assert store.get_run("mnist-data-a") == ended


def test_racing_ends_record_exactly_one(store: Any, twin: Any) -> None:
    store.record_run(run("mnist-data-race"), TTL)
    stores = [store, twin, store, twin]
    results = in_threads(
        4,
        lambda i: stores[i].end_run(
            RunEnd("mnist-data-race", "SUCCEEDED", T0 + 10 + i, reporter=f"r{i}"), TTL
        ),
    )
    assert sum(1 for _, changed in results if changed) == 1
    winner = next(record for record, changed in results if changed)
    assert store.get_run("mnist-data-race") == winner


def test_an_end_of_an_unknown_run_is_kept(store: Any) -> None:
    end = RunEnd("mnist-code-b", "SUCCEEDED", T0, reporter="exit-handler", route="mnist")
    ended, changed = store.end_run(end, TTL)
    assert changed and ended.state == "SUCCEEDED" and ended.duration_s is None
    assert store.get_run("mnist-code-b") == ended
    assert store.end_run(end, TTL)[1] is False


def test_an_invalid_state_is_refused(store: Any) -> None:
    with pytest.raises(ValueError, match="run state must be one of"):
        store.end_run(RunEnd("mnist-data-a", "DONE", T0), TTL)
    with pytest.raises(ValueError, match="invalid route name"):
        store.record_run(run("mnist-data-a", route="a/b"), TTL)


def test_runs_to_check_are_the_unended_ones_due(store: Any) -> None:
    store.record_run(run("mnist-data-due", check_after=T0 + 10), TTL)
    store.record_run(run("mnist-data-later", check_after=T0 + 1000), TTL)
    store.record_run(run("mnist-data-ended", check_after=T0 + 10), TTL)
    store.end_run(RunEnd("mnist-data-ended", "SUCCEEDED", T0 + 5), TTL)
    assert [r.job_id for r in store.runs_to_check(T0 + 20)] == ["mnist-data-due"]
    store.defer_check("mnist-data-due", T0 + 2000)
    assert store.runs_to_check(T0 + 20) == []
    assert [r.job_id for r in store.runs_to_check(T0 + 1500)] == ["mnist-data-later"]


def test_list_runs_pages_newest_first_per_route(store: Any) -> None:
    for i in range(7):
        store.record_run(run(f"mnist-data-{i}", at=T0 + i), TTL)
    store.record_run(run("churn-data-x", route="churn", at=T0 + 3.5), TTL)
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        page, token = store.list_runs("mnist", limit=3, page_token=token)
        seen += [r.job_id for r in page]
        pages += 1
        if token is None:
            break
    assert seen == [f"mnist-data-{i}" for i in range(6, -1, -1)]
    assert pages == 3
    everything, token = store.list_runs(None, limit=100)
    assert token is None and len(everything) == 8
    assert everything[3].job_id == "churn-data-x"


@pytest.mark.parametrize("token", ["x", "'; DROP TABLE runs; --", "9" * 400, "0000000000000|A"])
def test_a_forged_page_token_is_refused(store: Any, token: str) -> None:
    with pytest.raises(ValueError, match="not a page token"):
        store.list_runs("mnist", page_token=token)


def change(
    version: str, at: float, *, job_id: str = "mnist-data-a", value: float = 0.9
) -> ChampionChange:
    return ChampionChange(
        route="mnist",
        job_id=job_id,
        metric_name="accuracy",
        metric_value=value,
        model_uri=f"gs://reg/mnist/{version}/",
        version=version,
        commit="abc123",
        changed_at=at,
    )


def test_champion_history_is_oldest_first_and_once_per_job_and_version(store: Any) -> None:
    assert store.record_champion(change("2", T0 + 20, job_id="mnist-data-b", value=0.95), TTL)
    assert store.record_champion(change("1", T0), TTL)
    assert not store.record_champion(change("1", T0), TTL)  # a redelivered report
    history = store.champion_history("mnist")
    assert [(c.version, c.metric_value) for c in history] == [("1", 0.9), ("2", 0.95)]
    assert [c.version for c in store.champion_history("mnist", limit=1)] == ["2"]
    assert store.champion_history("churn") == []


def test_run_records_and_champions_expire(store: Any, clock: Clock) -> None:
    store.record_run(run("mnist-data-old", at=T0), 100.0)
    store.end_run(RunEnd("mnist-data-old", "SUCCEEDED", T0 + 10), 100.0)
    store.record_champion(change("1", T0), 100.0)
    store.record_run(run("mnist-data-new", at=T0 + 500), TTL)
    assert store.purge_expired(T0 + 50) == 0
    assert store.purge_expired(T0 + 200) >= 2
    assert store.get_run("mnist-data-old") is None
    assert store.champion_history("mnist") == []
    assert store.get_run("mnist-data-new") is not None


def test_a_version_2_sqlite_file_gains_the_run_tables(tmp_path: Any) -> None:
    path = tmp_path / "state.sqlite3"
    old = SQLiteStore(path)
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE runs")
        conn.execute("DROP TABLE champions")
        conn.execute("PRAGMA user_version = 2")
    del old
    reopened = SQLiteStore(path)
    reopened.record_run(run("mnist-data-a"), TTL)
    assert reopened.get_run("mnist-data-a") is not None
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3


def test_a_notification_is_marked_once_sent(store: Any) -> None:
    store.record_run(run("mnist-data-n"), TTL)
    ended, _ = store.end_run(RunEnd("mnist-data-n", "SUCCEEDED", T0 + 1), TTL)
    assert not ended.notified
    store.mark_notified("mnist-data-n")
    got = store.get_run("mnist-data-n")
    assert got is not None and got.notified and got.state == "SUCCEEDED"
    store.mark_notified("mnist-data-none")  # nothing to mark: no error
