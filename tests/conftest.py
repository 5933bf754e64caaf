"""Shared fixtures: configuration files, a fresh Service per test, and protocol fakes."""

from __future__ import annotations

import logging
import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MNIST_TEMPLATE = REPO / "pipeline_specs" / "mnist_training.yaml"

pytest_plugins = ["tests.fakes.pytest_plugin"]

BASE_CONFIG = """\
project: test-project
region: us-central1
backend: vertex
routes:
  - name: mnist
    template: {template}
    pipeline_root: gs://ct-bucket/pipeline-root
    service_account: trainer@test-project.iam.gserviceaccount.com
    parameters:
      data_uri: "{{data_uri}}"
      model_registry_uri: gs://ct-bucket/models
      commit_sha: "{{commit_sha}}"
      image_uri: "{{image_uri}}"
    data:
      bucket: ct-bucket
      include: ["data/**"]
      exclude: ["data/**/*.md"]
      mode: object
    code: true
    model: true
    allowed_templates: ["gs://ct-templates/mnist/"]
"""


@pytest.fixture
def config_text() -> str:
    return BASE_CONFIG.format(template=MNIST_TEMPLATE)


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    def write(text: str, name: str = "retrain.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture(scope="session")
def fake_gcs_server():
    """One fake-gcs-server for the session (start ~0.2 s); tests use their own bucket names."""
    from tests.fakes.gcs import FakeGcs

    server = FakeGcs().start()
    yield server
    server.stop()


@pytest.fixture
def fake_gcs(fake_gcs_server, monkeypatch: pytest.MonkeyPatch):
    """fake-gcs-server with ``STORAGE_EMULATOR_HOST`` set for this test."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs_server.url)
    return fake_gcs_server


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's settings, and each starts with no process-wide Service."""
    for name in list(os.environ):
        if name.startswith("RETRAIN_") or name in ("GOOGLE_CLOUD_PROJECT", "K_SERVICE"):
            monkeypatch.delenv(name, raising=False)
    from retrain_trigger import service

    service.set_service(None)
    yield
    service.set_service(None)
    # A test that set up the JSON log handler (a Service, the command line) bound it to that
    # test's streams: the next test sets up its own.
    logger = logging.getLogger("retrain_trigger")
    for handler in [h for h in logger.handlers if getattr(h, "_retrain_json", False)]:
        logger.removeHandler(handler)
    logger.propagate = True
