"""Fixtures for the training pipeline tests: sample shards, kfp local runs, fake-gcs-server."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

COMPILED = REPO / "pipeline_specs" / "mnist_training.yaml"


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits data set as 4 CSV shards in a local folder (read-only for tests)."""
    from retrain_trigger.sampledata import write_shards

    folder = tmp_path_factory.mktemp("digits")
    write_shards(str(folder), 4)
    return folder


@pytest.fixture
def run_pipeline(tmp_path: Path) -> Callable[..., dict]:
    """Run the committed, compiled YAML with kfp's local SubprocessRunner; returns its outputs."""
    from kfp import components, local

    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "pipeline-root"),
    )
    pipeline = components.load_component_from_file(str(COMPILED))

    def run(**params: object) -> dict:
        return dict(pipeline(**params).outputs)

    return run


@pytest.fixture
def gcs_bucket(fake_gcs, monkeypatch: pytest.MonkeyPatch):
    """A fresh bucket on fake-gcs-server; ``STORAGE_EMULATOR_HOST`` is set for this test (and for
    the pipeline steps it starts, which inherit the environment)."""
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="test-project", credentials=AnonymousCredentials())
    return client.create_bucket(f"test-{uuid.uuid4().hex[:12]}")
