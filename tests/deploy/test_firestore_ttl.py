"""Firestore time-to-live in deploy/terraform: every collection of store/firestore.py that grows
with the events has a TTL policy on ``expire_at``, and each TTL field keeps the single-field index
that ``purge_expired``'s range filter needs (an empty ``index_config`` would drop it:
https://registry.terraform.io/providers/hashicorp/google/latest/docs/resources/firestore_field)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import hcl2

REPO = Path(__file__).resolve().parents[2]
STORE = REPO / "src" / "retrain_trigger" / "store" / "firestore.py"
PREFIX = "retrain_"  # store/firestore.py DEFAULT_PREFIX

# Every collection of the store, by whether it grows with events or holds one document per route.
GROWING = {"windows", "window_items", "decisions"}
# Run outcomes (store/firestore.py "run outcomes"; their TTL policies are in outcomes.tf).
GROWING_RUNS = {"runs", "run_ends", "champions"}
ONE_PER_ROUTE = {"routes", "pending", "active", "pauses"}


def _collections() -> set[str]:
    return set(re.findall(r'client\.collection\(f"\{prefix\}(\w+)"\)', STORE.read_text()))


def _ttl_field() -> dict[str, Any]:
    parsed = hcl2.loads((REPO / "deploy" / "terraform" / "windows.tf").read_text())
    for block in parsed["resource"]:
        fields = block.get('"google_firestore_field"', {})
        if '"expire_at"' in fields:
            return dict(fields['"expire_at"'])
    raise AssertionError('windows.tf has no google_firestore_field "expire_at"')


def _ttl_collections() -> set[str]:
    parsed = hcl2.loads((REPO / "deploy" / "terraform" / "windows.tf").read_text())
    locals_ = {k: v for b in parsed["locals"] for k, v in b.items()}
    return set(re.findall(r'"(\w+)"', locals_["firestore_ttl_collections"]))


def test_every_collection_of_the_store_is_classified() -> None:
    assert _collections() == GROWING | GROWING_RUNS | ONE_PER_ROUTE, (
        "store/firestore.py has a collection this test does not know: does it grow? "
        "Then give it a TTL policy in windows.tf"
    )


def test_every_growing_collection_has_a_ttl_policy_on_expire_at() -> None:
    assert _ttl_collections() == {PREFIX + name for name in GROWING}
    field = _ttl_field()
    assert field["field"] == '"expire_at"'
    assert field["collection"] == "${each.value}"
    assert "local.firestore_ttl_collections" in field["for_each"]
    assert field["ttl_config"] == [{"__is_block__": True}]


def test_the_ttl_field_keeps_the_index_purge_expired_needs() -> None:
    assert '"expire_at", "<="' in STORE.read_text()  # purge_expired: a range on expire_at
    [index_config] = _ttl_field()["index_config"]
    indexes = [
        {k: v.strip('"') for k, v in index.items() if not k.startswith("__")}
        for index in index_config.get("indexes", [])
    ]
    assert {"order": "ASCENDING", "query_scope": "COLLECTION"} in indexes


def _outcomes_tf() -> dict[str, Any]:
    return hcl2.loads((REPO / "deploy" / "terraform" / "outcomes.tf").read_text())


def test_run_outcome_collections_have_a_ttl_policy_keeping_the_purge_index() -> None:
    parsed = _outcomes_tf()
    locals_ = {k: v for b in parsed["locals"] for k, v in b.items()}
    collections = set(re.findall(r'"(\w+)"', locals_["run_outcome_ttl_collections"]))
    assert collections == {PREFIX + name for name in GROWING_RUNS}
    fields = {
        name: body
        for block in parsed["resource"]
        for name, body in block.get('"google_firestore_field"', {}).items()
    }
    field = fields['"run_outcomes_expire_at"']
    assert field["field"] == '"expire_at"'
    assert "local.run_outcome_ttl_collections" in field["for_each"]
    assert field["ttl_config"] == [{"__is_block__": True}]
    [index_config] = field["index_config"]
    indexes = [
        {k: v.strip('"') for k, v in index.items() if not k.startswith("__")}
        for index in index_config.get("indexes", [])
    ]
    assert {"order": "ASCENDING", "query_scope": "COLLECTION"} in indexes
