"""GCS object resources and the stack's configurations shared by the local stack's tests
(tests/unit/test_localstack.py and tests/integration/test_localstack_processes.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from retrain_trigger.config import Config, parse_config
from retrain_trigger_dev.localstack.stack import local_config

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "pipeline_specs" / "mnist_training.yaml"


def resource(
    name: str, generation: str = "1700000000000001", size: str = "120", **extra: Any
) -> dict[str, Any]:
    out = {
        "kind": "storage#object",
        "bucket": "ct-bucket",
        "name": name,
        "generation": generation,
        "metageneration": "1",
        "size": size,
        "contentType": "text/csv",
        "timeCreated": "2026-11-27T10:00:00.123Z",
        "updated": "2026-11-27T10:00:00.123Z",
    }
    out.update(extra)
    return out


def stack_config(mode: str = "window") -> Config:
    """The stack's configuration; ``mode="marker"`` puts its data route in marker mode (one run
    per folder)."""
    config = local_config(bucket="ct-bucket", template=str(TEMPLATE), state_dir="/tmp/unused")
    if mode == "marker":
        data = config["routes"][0]["data"]
        data.update({"mode": "marker", "marker": "_SUCCESS"})
        data.pop("quiet_seconds")
        data.pop("max_wait_seconds")
    return parse_config(yaml.safe_dump(config), source="stack.yaml")
