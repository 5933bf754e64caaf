"""Firestore composite indexes: every one the store's queries need (``COMPOSITE_INDEXES`` in
store/firestore.py) is declared in deploy/terraform/windows.tf, and nothing else is. The emulator
serves any query without an index, so only this test catches a query whose index is missing
before production answers ``FAILED_PRECONDITION: The query requires an index``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import hcl2

from retrain_trigger.store.firestore import COMPOSITE_INDEXES, DEFAULT_PREFIX

REPO = Path(__file__).resolve().parents[2]
WINDOWS_TF = REPO / "deploy" / "terraform" / "windows.tf"
STORE = REPO / "src" / "retrain_trigger" / "store" / "firestore.py"


def _parsed() -> dict[str, Any]:
    return dict(hcl2.loads(WINDOWS_TF.read_text()))


def _declared() -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    locals_ = {k: v for block in _parsed()["locals"] for k, v in block.items()}
    out = set()
    for index in locals_["firestore_composite_indexes"].values():
        fields = tuple((f.strip('"'), o.strip('"')) for f, o in index["fields"])
        out.add((index["collection"].strip('"'), fields))
    return out


def _resource() -> dict[str, Any]:
    for block in _parsed()["resource"]:
        indexes = block.get('"google_firestore_index"', {})
        if '"composite"' in indexes:
            return dict(indexes['"composite"'])
    raise AssertionError('windows.tf has no google_firestore_index "composite"')


def test_every_index_the_store_needs_is_declared_and_nothing_else() -> None:
    needed = {(DEFAULT_PREFIX + collection, fields) for collection, fields in COMPOSITE_INDEXES}
    assert len(needed) == len(COMPOSITE_INDEXES)
    assert _declared() == needed


def test_the_index_resource_builds_one_index_per_declaration() -> None:
    resource = _resource()
    assert "local.firestore_composite_indexes" in resource["for_each"]
    assert "var.enable_windows" in resource["for_each"]
    assert resource["collection"] == "${each.value.collection}"
    assert resource["query_scope"] == '"COLLECTION"'
    [dynamic] = resource["dynamic"]
    content = dynamic['"fields"']["content"][0]
    assert (content["field_path"], content["order"]) == ("${fields.value[0]}", "${fields.value[1]}")


def test_the_queries_that_need_an_index_are_the_ones_listed() -> None:
    """The orderings in the store's source: each ordered field is the last field of an index on
    the collection it queries, after the equality filters the query uses."""
    source = STORE.read_text()
    assert re.findall(r'order_by\(\s*"(\w+)"', source) == ["added_at", "added_at", "time"]
    last_fields = {fields[-1][0] for _, fields in COMPOSITE_INDEXES}
    assert last_fields == {"added_at", "time"}
    orders = {(c, fields[-1]) for c, fields in COMPOSITE_INDEXES}
    assert ("window_items", ("added_at", "ASCENDING")) in orders  # iter_window_items
    assert ("window_items", ("added_at", "DESCENDING")) in orders  # _tally's newest item
    equalities = {fields[0][0] for c, fields in COMPOSITE_INDEXES if c == "decisions"}
    assert equalities == {"object_key", "route", "outcome"}
