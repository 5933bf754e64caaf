"""End to end: the committed, compiled YAML run with kfp's local SubprocessRunner."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from retrain_trigger_dev.sampledata import write_shards

pytestmark = pytest.mark.slow

VERSION = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")


def _versions(registry: Path) -> list[str]:
    return sorted(p.name for p in registry.iterdir() if p.is_dir())


def test_registers_then_keeps_the_better_champion(
    run_pipeline, digits_dir: Path, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    first = run_pipeline(
        data_uri=str(digits_dir),
        model_registry_uri=str(registry),
        commit_sha="0123abcd",
        image_uri="trainer@sha256:feed",
    )
    assert first["registered"] is True
    assert first["accuracy"] >= 0.97
    version = first["version"]
    assert VERSION.match(version)
    assert _versions(registry) == [version]
    assert (registry / version / "model.joblib").stat().st_size > 0
    metadata = json.loads((registry / version / "metadata.json").read_text())
    assert metadata["accuracy"] == first["accuracy"]
    assert metadata["commit_sha"] == "0123abcd"
    assert metadata["image_uri"] == "trainer@sha256:feed"
    assert metadata["hyperparameters"]["model_type"] == "svc"
    assert len(metadata["data_sources"]) == 4
    pointer = json.loads((registry / "champion.json").read_text())
    assert pointer["version"] == version

    # A stricter gate: the run succeeds, nothing is registered.
    strict = run_pipeline(
        data_uri=str(digits_dir), model_registry_uri=str(registry), min_accuracy=0.999
    )
    assert strict["registered"] is False
    assert strict["version"] == ""
    assert "below min_accuracy 0.9990" in strict["reason"]

    # Worse hyperparameters: above min_accuracy but below the champion on the same split.
    worse = run_pipeline(
        data_uri=str(digits_dir),
        model_registry_uri=str(registry),
        model_type="logistic_regression",
        c=1.0,
    )
    assert worse["registered"] is False
    assert 0.9 <= worse["accuracy"] < first["accuracy"]
    assert f"below champion {version}'s" in worse["reason"]
    assert json.loads((registry / "champion.json").read_text()) == pointer
    assert _versions(registry) == [version]


def test_broken_shard_fails_the_run_with_the_validation_message(
    run_pipeline, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    write_shards(str(data), 2, broken=True)
    registry = tmp_path / "registry"
    with pytest.raises(RuntimeError, match="load-and-validate"):
        run_pipeline(data_uri=str(data), model_registry_uri=str(registry))
    # kfp local streams each step's output (its traceback included) to stdout.
    out = capfd.readouterr().out
    assert (
        "ValueError: " + str(data / "digits-broken.csv") + " line 4 column 'label': "
        "label 11 is outside 0..9"
    ) in out
    assert not registry.exists()


@pytest.mark.emulator
def test_reads_a_gcs_manifest_and_registers_to_gcs(run_pipeline, gcs_bucket) -> None:
    bucket = gcs_bucket.name
    shards = write_shards(f"gs://{bucket}/data", 3)
    generations = {
        f"gs://{bucket}/{blob.name}": str(blob.generation)
        for blob in gcs_bucket.list_blobs(prefix="data/")
    }
    manifest = {"objects": [{"uri": uri, "generation": generations[uri]} for uri in shards]}
    gcs_bucket.blob("windows/w1.json").upload_from_string(json.dumps(manifest))

    out = run_pipeline(
        data_uri=f"gs://{bucket}/windows/w1.json", model_registry_uri=f"gs://{bucket}/models"
    )
    assert out["registered"] is True
    assert out["accuracy"] >= 0.9
    version = out["version"]
    pointer = json.loads(gcs_bucket.blob("models/champion.json").download_as_bytes())
    assert pointer["version"] == version
    assert pointer["model_uri"] == f"gs://{bucket}/models/{version}/model.joblib"
    assert gcs_bucket.get_blob(f"models/{version}/model.joblib").size > 0
    metadata = json.loads(gcs_bucket.blob(f"models/{version}/metadata.json").download_as_bytes())
    assert {s["uri"]: s["generation"] for s in metadata["data_sources"]} == generations

    # Same data, stricter gate: the GCS champion stays.
    again = run_pipeline(
        data_uri=f"gs://{bucket}/data/",
        model_registry_uri=f"gs://{bucket}/models",
        min_accuracy=0.9999,
    )
    assert again["registered"] is False
    assert json.loads(gcs_bucket.blob("models/champion.json").download_as_bytes()) == pointer


@pytest.mark.emulator
def test_reports_every_run_and_each_champion_move(
    run_pipeline, digits_dir: Path, tmp_path: Path, outcome_topic, schema_validator
) -> None:
    registry = tmp_path / "registry"
    first = run_pipeline(
        data_uri=str(digits_dir),
        model_registry_uri=str(registry),
        commit_sha="0123abcd",
        image_uri="trainer@sha256:feed",
        outcome_topic=outcome_topic.path,
        job_id="mnist-data-window-first-0123456789abcdef",
    )
    assert first["registered"] is True
    strict = run_pipeline(
        data_uri=str(digits_dir),
        model_registry_uri=str(registry),
        min_accuracy=0.999,
        outcome_topic=outcome_topic.path,
        job_id="mnist-data-window-strict-0123456789abcdef",
    )
    assert strict["registered"] is False
    data = tmp_path / "broken"
    write_shards(str(data), 2, broken=True)
    with pytest.raises(RuntimeError, match="load-and-validate"):
        run_pipeline(
            data_uri=str(data),
            model_registry_uri=str(registry),
            outcome_topic=outcome_topic.path,
            job_id="mnist-data-window-broken-0123456789abcdef",
        )

    messages = outcome_topic.messages()
    outcomes = {
        m.data["job_id"]: m.data
        for m in messages
        if m.attributes == {"retrain-message": "run-outcome"}
    }
    champions = [m.data for m in messages if m.attributes == {"retrain-message": "champion"}]
    assert len(messages) == 4
    for report in outcomes.values():
        schema_validator("run-outcome").validate(report)
    assert {job: r["state"] for job, r in outcomes.items()} == {
        "mnist-data-window-first-0123456789abcdef": "SUCCEEDED",
        "mnist-data-window-strict-0123456789abcdef": "SUCCEEDED",
        "mnist-data-window-broken-0123456789abcdef": "FAILED",
    }
    assert outcomes["mnist-data-window-broken-0123456789abcdef"]["error"]["code"] == 1
    # Only the run that moved the champion reported one.
    (champion,) = champions
    schema_validator("champion").validate(champion)
    assert champion["job_id"] == "mnist-data-window-first-0123456789abcdef"
    assert champion["version"] == first["version"]
    assert champion["model_uri"] == f"{registry / first['version']}/"
    assert champion["metric"] == {"name": "accuracy", "value": first["accuracy"]}
    assert champion["previous"] is None
    assert (champion["commit_sha"], champion["image_uri"]) == ("0123abcd", "trainer@sha256:feed")
