"""The window manifest, written piece by piece: the same bytes as the whole document, bounded
pieces, and never finished when the items read are not the items counted."""

from __future__ import annotations

import json
from typing import Any

import pytest

from retrain_trigger.config import parse_config
from retrain_trigger.gates import windows
from retrain_trigger.store import Window, WindowItem, WindowState

CONFIG = """
project: p
region: us-central1
routes:
  - name: bulk
    template: gs://bulk-templates/pipeline.yaml
    pipeline_root: gs://bulk-data/root
    parameters: {data_uri: "{data_uri}"}
    data: {bucket: bulk-data, include: ["bulk/**"], mode: window}
"""


@pytest.fixture
def route() -> Any:
    return parse_config(CONFIG, source="retrain.yaml", env={}).routes[0]


def window(count: int) -> Window:
    return Window(
        window_id="bulk__20270115-080000-abcdef",
        route="bulk",
        state=WindowState.CLOSING,
        opened_at=1_800_000_000.5,
        last_event_at=1_800_000_100.0,
        count=count,
    )


def items(count: int) -> list[WindowItem]:
    return [
        WindowItem("b", f"bulk/part-{n:05d}.csv", str(n + 1), size=None if n % 7 else n)
        for n in range(count)
    ]


def whole(route: Any, count: int) -> bytes:
    """The manifest as one json.dumps of the whole document."""
    body = {
        "kind": windows.MANIFEST_KIND,
        "route": "bulk",
        "window_id": window(count).window_id,
        "run_key": f"window:bulk:{window(count).window_id}",
        "opened_at": 1_800_000_000.5,
        "count": count,
        "objects": [
            {
                "uri": i.gcs_uri,
                "bucket": i.bucket,
                "name": i.object,
                "generation": i.generation,
                "size": i.size,
            }
            for i in items(count)
        ],
    }
    return json.dumps(body, indent=1, sort_keys=True).encode()


@pytest.mark.parametrize("count", [0, 1, 3, 50])
def test_the_pieces_are_the_whole_document(route: Any, count: int) -> None:
    streamed = b"".join(windows.manifest_chunks(route, window(count), items(count), count))
    assert streamed == whole(route, count)
    assert windows.manifest_body(route, window(count), items(count)) == whole(route, count)
    assert json.loads(streamed)["count"] == count


def test_pieces_are_bounded_whatever_the_window_size(
    route: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(windows, "MANIFEST_CHUNK_BYTES", 4096)
    chunks = list(windows.manifest_chunks(route, window(2000), iter(items(2000)), 2000))
    assert len(chunks) > 50
    one_object = max(
        len(json.dumps(o, indent=1)) for o in json.loads(whole(route, 2000))["objects"]
    )
    assert max(len(c) for c in chunks) < 4096 + 2 * one_object
    assert b"".join(chunks) == whole(route, 2000)


@pytest.mark.parametrize("read", [2, 4])
def test_items_other_than_counted_never_finish_the_manifest(route: Any, read: int) -> None:
    produced: list[bytes] = []
    with pytest.raises(
        windows.ManifestIncomplete, match=rf"{read} items read, 3 counted at its claim"
    ):
        for chunk in windows.manifest_chunks(route, window(3), items(read), 3):
            produced.append(chunk)
    assert not b"".join(produced).rstrip().endswith(b"}")


def test_a_local_manifest_is_renamed_into_place_or_not_written(tmp_path: Any, route: Any) -> None:
    target = tmp_path / "manifests" / "m.json"
    windows.write_manifest(str(target), windows.manifest_chunks(route, window(2), items(2), 2))
    assert target.read_bytes() == whole(route, 2)

    broken = tmp_path / "manifests" / "broken.json"
    with pytest.raises(windows.ManifestIncomplete):
        windows.write_manifest(str(broken), windows.manifest_chunks(route, window(3), items(1), 3))
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.json"]
