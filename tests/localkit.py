"""GCS object resources and the stack's configurations shared by the local stack's tests
(tests/unit/test_localstack.py and tests/integration/test_localstack_processes.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from retrain_trigger.config import Config, parse_config
from retrain_trigger_dev.localstack.poller import BucketPoller
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


# The bucket poller's lister and sender, in memory.


class FakeBucket:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}

    def put(self, name: str, generation: str) -> None:
        self.objects[name] = resource(name, generation)

    def list(self, bucket: str, prefix: str) -> list[dict[str, Any]]:
        assert bucket == "ct-bucket"
        return [r for n, r in sorted(self.objects.items()) if n.startswith(prefix)]


class FakeSender:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.statuses: list[int | Exception] = []

    def __call__(self, url: str, event: Any) -> int:
        self.sent.append((event["subject"], event.data["generation"]))
        status = self.statuses.pop(0) if self.statuses else 200
        if isinstance(status, Exception):
            raise status
        return status


def make_poller(bucket: FakeBucket, sender: FakeSender, **kwargs: Any) -> BucketPoller:
    return BucketPoller(
        "ct-bucket", "http://fn", prefix="data/", lister=bucket.list, sender=sender, **kwargs
    )
