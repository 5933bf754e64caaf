"""Fixtures for the training pipeline tests: sample shards, kfp local runs, fake-gcs-server and
the Pub/Sub emulator."""

from __future__ import annotations

import itertools
import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ._pubsub import PubSubEmulator, Received, launcher, running_emulator

REPO = Path(__file__).resolve().parents[2]

COMPILED = REPO / "pipeline_specs" / "mnist_training.yaml"
SCHEMAS = REPO / "schemas"


def task_outputs(run_root: Path) -> dict[str, dict[str, Any]]:
    """``{task: {output parameter: value}}`` of one kfp local run under ``run_root``."""
    (run_dir,) = [p for p in run_root.iterdir() if p.is_dir()]
    outputs = {}
    for path in run_dir.rglob("executor_output.json"):
        data = json.loads(path.read_text())
        outputs[path.parent.name] = dict(data.get("parameterValues") or {})
    return outputs


def run_compiled(spec: Path, root: Path, **params: object) -> dict[str, Any]:
    """Run a compiled spec with kfp's local SubprocessRunner under a new folder of ``root``.

    Returns the output parameters of all its tasks in one mapping (a pipeline that reports its
    outcome has no pipeline outputs: they stay its tasks'). Raises what the runner raises when a
    task fails.
    """
    from kfp import components, local

    run_root = root / f"run-{uuid.uuid4().hex[:8]}"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(run_root))
    components.load_component_from_file(str(spec))(**params)
    merged: dict[str, Any] = {}
    for task, values in task_outputs(run_root).items():
        clash = set(merged) & set(values)
        assert not clash, f"{task} repeats output(s) {clash}"
        merged.update(values)
    return merged


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits data set as 4 CSV shards in a local folder (read-only for tests)."""
    from retrain_trigger_dev.sampledata import write_shards

    folder = tmp_path_factory.mktemp("digits")
    write_shards(str(folder), 4)
    return folder


@pytest.fixture
def run_pipeline(tmp_path: Path) -> Callable[..., dict]:
    """Run the committed MNIST spec with kfp's local SubprocessRunner; returns its tasks' outputs
    (``registered``, ``version``, ``reason``, ``accuracy``, ...)."""

    def run(**params: object) -> dict:
        return run_compiled(COMPILED, tmp_path / "pipeline-root", **params)

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


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PubSubEmulator]:
    """gcloud's Pub/Sub emulator on a free port of 127.0.0.1, for the whole session.

    Skipped only when gcloud or Java is not installed; fails when gcloud is there without its
    emulator component.
    """
    missing = [name for name in ("gcloud", "java") if shutil.which(name) is None]
    if missing:
        pytest.skip(f"Pub/Sub emulator unavailable: {' and '.join(missing)} not installed")
    if launcher() is None:
        pytest.fail(
            "gcloud is installed but its Pub/Sub emulator is not: run "
            "`gcloud components install pubsub-emulator` "
            "(or install the google-cloud-cli-pubsub-emulator package)"
        )
    with running_emulator(tmp_path_factory.mktemp("pubsub")) as emulator:
        yield emulator


@dataclass
class OutcomeTopic:
    """A fresh topic on the emulator with a pull subscription; ``PUBSUB_EMULATOR_HOST`` is set
    for the test and the pipeline steps it starts."""

    path: str
    subscription: str
    emulator: PubSubEmulator

    def messages(self) -> list[Received]:
        return self.emulator.drain(self.subscription)


@pytest.fixture
def outcome_topic(pubsub_emulator: PubSubEmulator, monkeypatch: pytest.MonkeyPatch) -> OutcomeTopic:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    path, subscription = pubsub_emulator.topic_with_subscription()
    return OutcomeTopic(path, subscription, pubsub_emulator)


@pytest.fixture(scope="session")
def schema_validator() -> Callable[[str], Any]:
    """``validator("run-outcome")``: a draft 2020-12 validator of ``schemas/<name>.schema.json``
    (formats checked too)."""
    from jsonschema import Draft202012Validator, FormatChecker

    def make(name: str) -> Any:
        schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
        Draft202012Validator.check_schema(schema)
        return Draft202012Validator(schema, format_checker=FormatChecker())

    return make


_job_ids = itertools.count(1)


@pytest.fixture
def job_id() -> str:
    """A job id of the shape the trigger makes (``<route>-<kind>-<readable>-<hash>``)."""
    return f"test-data-run{next(_job_ids)}-{uuid.uuid4().hex[:16]}"
