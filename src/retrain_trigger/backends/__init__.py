"""Backends start and inspect pipeline runs. Each sits behind the same small protocol.

- ``vertex``: Vertex AI Pipelines through ``google.cloud.aiplatform_v1`` (production), built in.
- any other name: a backend registered under the Python entry-point group
  :data:`ENTRY_POINT_GROUP` by an installed distribution. This repository's development package
  registers ``local`` (Kubeflow's local runner executing the same compiled YAML, runs kept in
  SQLite); a function zip ships the core alone, so there ``backend: local`` is a configuration
  error naming what is missing. The core never imports a registered backend's module itself.

Backends are created lazily, once per process, by :func:`create_backend`; importing this
package imports neither the Vertex client nor any registered backend, and entry points are read
only when a configuration names a backend other than ``vertex``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from retrain_trigger.backends.base import Backend, JobStatus

if TYPE_CHECKING:
    from retrain_trigger.config import Config

__all__ = [
    "BUILT_IN",
    "ENTRY_POINT_GROUP",
    "Backend",
    "JobStatus",
    "check_backend",
    "create_backend",
    "installed_backends",
]


BUILT_IN = "vertex"
# The entry-point group other backends register under (``pyproject.toml``:
# ``[project.entry-points."retrain_trigger.backends"] local = "package.module:Class"``); the
# object named has ``from_config(config) -> Backend``.
ENTRY_POINT_GROUP = "retrain_trigger.backends"
# Backends this repository documents, and where each comes from when it is not installed.
KNOWN: dict[str, str] = {
    "local": "the development package of this repository (pip install -e '.[local]'), which a "
    "function zip never holds; deployed functions use backend: vertex",
}


def installed_backends() -> tuple[str, ...]:
    """The names a configuration may give as ``backend``: ``vertex``, then registered ones."""
    from importlib.metadata import entry_points

    registered = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)} - {BUILT_IN})
    return (BUILT_IN, *registered)


def check_backend(name: str) -> str:
    """``name`` when a backend of that name can be created here; else a ConfigError's message."""
    if name == BUILT_IN:
        return ""
    available = installed_backends()
    if name in available:
        return ""
    if name in KNOWN:
        return f"backend {name!r} is not installed: it comes with {KNOWN[name]}"
    return f"must be one of {', '.join(available)}, got {name!r}"


def create_backend(config: Config) -> Backend:
    """Build the configured backend. Heavy modules are imported here, not at import time."""
    if config.backend == BUILT_IN:
        from retrain_trigger.backends.vertex import VertexBackend

        return VertexBackend.from_config(config)
    from importlib.metadata import entry_points

    from retrain_trigger.errors import ConfigError

    found = entry_points(group=ENTRY_POINT_GROUP, name=config.backend)
    if not found:
        problem = check_backend(config.backend)
        raise ConfigError(problem, source=config.source, field="backend")
    factory = next(iter(found)).load()
    backend: Backend = factory.from_config(config)
    return backend
