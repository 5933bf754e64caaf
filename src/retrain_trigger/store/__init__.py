"""State that outlives one event: batch windows, concurrency leases and decision history.

One protocol (:class:`StateStore`), two implementations tested against one contract suite:
SQLite (``<state_dir>/state.sqlite3``) locally and Firestore in production. :func:`open_store`
picks one from the configuration; the Firestore client library is imported only when the
Firestore store is created.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from retrain_trigger.errors import StoreError
from retrain_trigger.store.base import (
    ActiveJob,
    Pending,
    StateStore,
    Window,
    WindowInfo,
    WindowItem,
    WindowState,
)
from retrain_trigger.store.sqlite import STATE_FILE, SQLiteStore

if TYPE_CHECKING:
    from retrain_trigger.config import Config
    from retrain_trigger.store.firestore import FirestoreStore

__all__ = [
    "STATE_FILE",
    "ActiveJob",
    "FirestoreStore",
    "Pending",
    "SQLiteStore",
    "StateStore",
    "StoreError",
    "Window",
    "WindowInfo",
    "WindowItem",
    "WindowState",
    "open_store",
]


def open_store(config: Config, **kwargs: Any) -> StateStore:
    """The store ``config.store`` names: ``sqlite`` (``<state_dir>/state.sqlite3``) or
    ``firestore`` (database ``config.firestore_database`` of ``config.project``).

    Closed windows and their items are kept ``history.ttl_days`` after they close, as long as
    the decisions that name them. A Firestore transaction that keeps meeting contention is
    retried for ``submit_deadline_seconds``. ``kwargs`` go to the store's constructor
    (``clock``, ``retention_seconds``, ``busy_timeout``, ``prefix``, ``deadline`` ...).
    """
    kwargs.setdefault("retention_seconds", config.history_ttl_days * 86400.0)
    if config.store == "sqlite":
        return SQLiteStore(os.path.join(config.state_dir, STATE_FILE), **kwargs)
    if config.store == "firestore":
        from retrain_trigger.store.firestore import FirestoreStore

        kwargs.setdefault("deadline", config.submit_deadline_seconds)
        return FirestoreStore(
            project=config.project or None, database=config.firestore_database, **kwargs
        )
    raise ValueError(f"unknown state store {config.store!r}; expected sqlite or firestore")


def __getattr__(name: str) -> Any:
    if name == "FirestoreStore":
        from retrain_trigger.store.firestore import FirestoreStore

        return FirestoreStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
