"""Fixtures for the fakes. Registered by the root ``conftest.py`` with ``pytest_plugins``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.vertex import FakeVertex

MINIMAL_PIPELINE = Path(__file__).with_name("minimal_pipeline.yaml")


@pytest.fixture
def fake_vertex() -> Iterator[FakeVertex]:
    """A fake Vertex AI pipelineJobs REST server on 127.0.0.1, fresh for each test.

    Point a client at ``fake_vertex.endpoint``; nothing global (environment, clients) is set.
    The Vertex client's modules are imported first: an instance's first submission imports them
    inside its submit deadline, which on a loaded 2-core machine can take longer than the short
    deadlines the tests set, and that would fail a test for the machine's load, not the code.
    """
    import google.cloud.aiplatform_v1
    import google.cloud.aiplatform_v1.services.pipeline_service.transports.rest  # noqa: F401

    fake = FakeVertex().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def minimal_pipeline_yaml() -> bytes:
    """A compiled KFP v2 pipeline with one parameter of each scalar type."""
    return MINIMAL_PIPELINE.read_bytes()
