"""Backends other than vertex come from entry points: the core never imports them."""

from __future__ import annotations

import importlib.metadata

import pytest

from retrain_trigger import backends
from retrain_trigger.config import parse_config
from retrain_trigger.errors import ConfigError

LOCAL = """
backend: local
routes: [{name: m, template: t.yaml, pipeline_root: gs://b/r, code: true}]
"""


def test_the_development_package_registers_the_local_backend() -> None:
    assert backends.installed_backends() == ("vertex", "local")
    config = parse_config(LOCAL, env={"RETRAIN_STATE_DIR": "/nonexistent/state"})
    backend = backends.create_backend(config)
    assert type(backend).__module__ == "retrain_trigger_dev.local.backend"
    assert backend.name == "local"


def test_in_a_function_zip_backend_local_is_a_clear_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A zip holds the core alone: no distribution registers ``local`` there."""
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **_: [])
    with pytest.raises(
        ConfigError,
        match=r"backend: backend 'local' is not installed: it comes with the development package",
    ):
        parse_config(LOCAL, env={})
    with pytest.raises(ConfigError, match=r"backend: must be one of vertex, got 'kubeflow'"):
        parse_config(LOCAL.replace("local", "kubeflow"), env={})
