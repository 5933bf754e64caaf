"""The Backend protocol, and the status of a run that every backend answers with.

Kept apart from :mod:`retrain_trigger.backends` (which creates backends, importing them lazily)
so that a backend module imports these names without importing its creator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from retrain_trigger.constants import ACTIVE_STATES, FINAL_STATES

if TYPE_CHECKING:
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

    def list(self, *, route: str = "", limit: int = 100, state: str = "") -> list[JobStatus]:
        """Most recent runs first, optionally only those of one route, or in one state."""
        ...
