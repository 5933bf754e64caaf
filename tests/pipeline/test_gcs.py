"""The storage helpers against fake-gcs-server: listing with generations, pinned reads, and the
champion pointer's generation precondition."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kfp.dsl import Dataset, Metrics

from pipeline_specs import storage
from pipeline_specs.mnist import load_data
from retrain_trigger_dev.sampledata import write_shards

pytestmark = pytest.mark.emulator


def test_list_prefix_single_object_and_manifest(gcs_bucket) -> None:
    bucket = gcs_bucket.name
    written = write_shards(f"gs://{bucket}/data", 2)
    gcs_bucket.blob("data/README.md").upload_from_string(b"not data")
    gcs_bucket.blob("data-other/x.csv").upload_from_string(b"label\n")
    listed = load_data.list_data_objects(f"gs://{bucket}/data")
    assert [uri for uri, _ in listed] == written
    for uri, generation in listed:
        assert generation == str(gcs_bucket.get_blob(uri.split("/", 3)[3]).generation)
    assert load_data.list_data_objects(written[0]) == [listed[0]]
    with pytest.raises(ValueError, match="does not exist"):
        load_data.list_data_objects(f"gs://{bucket}/data/missing.csv")
    with pytest.raises(ValueError, match="no CSV shards"):
        load_data.list_data_objects(f"gs://{bucket}/nothing-here")


def test_manifest_reads_pinned_generations(gcs_bucket, tmp_path: Path) -> None:
    bucket = gcs_bucket.name
    write_shards(f"gs://{bucket}/data", 2)
    listed = load_data.list_data_objects(f"gs://{bucket}/data/")
    manifest = {"objects": [{"uri": u, "generation": g} for u, g in listed]}
    gcs_bucket.blob("windows/w1.json").upload_from_string(json.dumps(manifest))
    stats = Metrics(name="stats", uri=str(tmp_path / "stats"))
    out = load_data.load_and_validate(
        f"gs://{bucket}/windows/w1.json",
        0.2,
        1,
        Dataset(name="train", uri=str(tmp_path / "train")),
        Dataset(name="test", uri=str(tmp_path / "test")),
        stats,
    )
    assert out.rows == 1797
    assert [(s["uri"], s["generation"]) for s in json.loads(out.data_sources)] == listed

    # The window's object was overwritten since: its generation is gone, and the run says so.
    gcs_bucket.blob(listed[0][0].split("/", 3)[3]).upload_from_string(b"label\n")
    with pytest.raises(ValueError, match=f"generation {listed[0][1]} does not exist.*overwritten"):
        load_data.load_and_validate(
            f"gs://{bucket}/windows/w1.json",
            0.2,
            1,
            Dataset(name="train", uri=str(tmp_path / "train")),
            Dataset(name="test", uri=str(tmp_path / "test")),
            Metrics(name="stats", uri=str(tmp_path / "stats")),
        )


def test_champion_pointer_uses_generation_preconditions(gcs_bucket) -> None:
    registry = f"gs://{gcs_bucket.name}/models"
    assert storage.read_champion(registry) == (None, 0)
    assert storage.swap_champion(registry, b'{"version": "a"}', 0) is True
    assert storage.swap_champion(registry, b'{"version": "b"}', 0) is False  # exists now
    pointer, generation = storage.read_champion(registry)
    assert pointer == {"version": "a"}
    assert generation == gcs_bucket.get_blob("models/champion.json").generation
    assert storage.swap_champion(registry, b'{"version": "c"}', generation + 1) is False
    assert storage.swap_champion(registry, b'{"version": "c"}', generation) is True
    assert storage.swap_champion(registry, b'{"version": "d"}', generation) is False  # stale
    assert storage.read_champion(registry)[0] == {"version": "c"}
