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
    """
    fake = FakeVertex().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def minimal_pipeline_yaml() -> bytes:
    """A compiled KFP v2 pipeline with one parameter of each scalar type."""
    return MINIMAL_PIPELINE.read_bytes()
