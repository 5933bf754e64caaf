"""Backends start and inspect pipeline runs. Each sits behind the same small protocol.

- ``vertex``: Vertex AI Pipelines through ``google.cloud.aiplatform_v1`` (production).
- ``local``: Kubeflow's local runner executing the same compiled YAML, runs kept in SQLite.

Backends are created lazily, once per process, by :func:`create_backend`; importing this
package imports neither the Vertex client nor Kubeflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from retrain_trigger.constants import ACTIVE_STATES, FINAL_STATES

if TYPE_CHECKING:
    from retrain_trigger.config import Config
    from retrain_trigger.model import RunHandle, RunRequest
    from retrain_trigger.spec import PipelineTemplate


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    job_name: str
    state: str
    run_key: str = ""
    route: str = ""
    create_time: str = ""
    start_time: str = ""
    end_time: str = ""
    error: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


@runtime_checkable
class Backend(Protocol):
    name: str

    def submit(self, request: RunRequest, template: PipelineTemplate) -> RunHandle:
        """Create the run with id ``request.job_id``.

        Returns ``RunHandle(created=False)`` with the existing job's name when that id already
        exists. Raises ``BackendUnavailable`` (retryable) or ``BackendRefused``/``TemplateError``.
        """
        ...

    def get(self, job_id: str) -> JobStatus:
        """The run's current state. Raises ``KeyError`` when no such run exists."""
        ...

    def list(self, *, route: str = "", limit: int = 100) -> list[JobStatus]:
        """Most recent runs first, optionally only those of one route."""
        ...


def create_backend(config: Config) -> Backend:
    """Build the configured backend. Heavy modules are imported here, not at import time."""
    if config.backend == "vertex":
        from retrain_trigger.backends.vertex import VertexBackend

        return VertexBackend.from_config(config)
    if config.backend == "local":
        from retrain_trigger.backends.local import LocalBackend

        return LocalBackend.from_config(config)
    from retrain_trigger.errors import ConfigError

    raise ConfigError(f"unknown backend {config.backend!r}", field="backend")
