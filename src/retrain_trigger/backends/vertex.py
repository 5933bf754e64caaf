"""The Vertex AI Pipelines backend, on ``google.cloud.aiplatform_v1``'s PipelineServiceClient.

(Above ~400 lines on purpose: the client's error semantics (409 duplicate, ABORTED, deadlines)
and the request body it sends are one contract with the service; split, each half would need the
other to be read. The retry policy is its own module, :mod:`retrain_trigger.retry`.)

Importing this module is cheap: ``google.cloud.aiplatform_v1`` (about 0.7 s), ``google.api_core``
and ``requests`` are imported on first use, and each backend creates its client once, lazily,
behind a lock. The client uses the REST transport, the one the tests drive against the fake
Vertex server.

Endpoints (``vertex_endpoint`` in the configuration):

- unset: ``{region}-aiplatform.googleapis.com`` with Application Default Credentials;
- ``https://host[:port]`` or ``host[:port]``: that host, with Application Default Credentials;
- ``http://host:port``: plain HTTP with anonymous credentials, for a local fake server.

Retries. Creating a PipelineJob with a caller-chosen id is idempotent (a second create with the
same id fails with 409 and starts nothing), so ``submit`` retries transient failures (429, 500,
502, 503, 504, timeouts, connection errors) with exponential backoff and jitter, as a
``google.api_core.retry.Retry`` policy, within ``submit_deadline_seconds`` in total; each attempt
gets ``min(remaining, 10 s)``. When the deadline passes, ``BackendUnavailable`` (retryable) is
raised, so the platform redelivers the event later. 400, 401, 403, 404 and the like raise
``BackendRefused`` at once: retrying cannot help, an operator must act.

The policy wraps each attempt, and each attempt calls the client with ``retry=None`` and its own
timeout. Handing the client ``retry=`` and a float ``timeout=`` instead would let an attempt
overrun the deadline: api_core's per-attempt timeout falls back to the full value once less than
a second remains. The policy stops early when the next backoff sleep would end past the deadline.

Duplicates. A 409 ALREADY_EXISTS on create means the job id is taken: the run exists, or existed
(it may have been deleted since). Either way the run was started once, so ``submit`` answers
``RunHandle(created=False)`` with the existing job's name and state, read with a GET. If that GET
finds nothing (a deleted job) or fails, the answer is still a duplicate, with the name computed from
the request (``projects/{project}/locations/{region}/pipelineJobs/{job_id}``): answering an error
would make the platform redeliver an event whose run can never be created again. One case reads as
a duplicate although this very call created the job: an attempt whose answer was lost (timeout,
connection reset) but which did create the job, followed by a retry that gets the 409. The job
still exists exactly once.

A 409 with status ABORTED is a concurrency conflict, not an existing job: it is retried.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from retrain_trigger.backends.base import JobStatus
from retrain_trigger.constants import JOB_ID, KEY_LABEL, ROUTE_LABEL
from retrain_trigger.errors import BackendRefused, BackendUnavailable, SubmitError, TemplateError
from retrain_trigger.model import RunHandle
from retrain_trigger.retry import retry_policy, retryable_types, rpc_status

if TYPE_CHECKING:
    from google.auth.credentials import Credentials
    from google.cloud.aiplatform_v1 import PipelineJob, PipelineServiceClient

    from retrain_trigger.config import Config
    from retrain_trigger.model import RunRequest
    from retrain_trigger.spec import PipelineTemplate

__all__ = ["VertexBackend"]

log = logging.getLogger(__name__)

# Job ids an instance remembers having created or seen exist (a few hundred KiB at most).
KNOWN_JOBS = 4096
# The longest a single HTTP attempt may take; the overall deadline bounds it further.
MAX_ATTEMPT_SECONDS = 10.0
# Below this much time left, a new attempt is not worth starting.
MIN_ATTEMPT_SECONDS = 0.05
# Most jobs asked for in one list page.
MAX_PAGE_SIZE = 100

_STATE_PREFIX = "PIPELINE_STATE_"

T = TypeVar("T")


# -- errors ----------------------------------------------------------------------------------


def _api_message(exc: BaseException) -> str:
    """The service's own error message, without the method and URL api_core prepends."""
    response = getattr(exc, "response", None)
    try:
        payload = response.json() if response is not None else None
    except ValueError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        message = payload["error"].get("message")
        if message:
            return str(message)
    message = getattr(exc, "message", None)
    if isinstance(message, str) and message:
        if response is not None and len(message) > 300:  # an HTML page from a proxy
            return message[:297] + "..."
        return message
    return str(exc) or type(exc).__name__


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no answer"
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        status = rpc_status(exc)
        return f"{code}{' ' + status if status else ''}: {_api_message(exc)}"
    name = type(exc).__name__
    text = str(exc)
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{name}: {text}" if text else name


def _refused(exc: BaseException, what: str, where: str) -> BackendRefused:
    """An API error that retrying cannot fix, named for the operator who must act."""
    code = getattr(exc, "code", None)
    status = rpc_status(exc)
    tag = f"{code}{' ' + status if status else ''}"
    message = _api_message(exc)
    if code == 401:
        text = f"Vertex AI rejected the credentials ({tag}) on {what}: {message}"
    elif code == 403:
        text = (
            f"permission denied ({tag}) on {what} in {where}: {message}; the caller needs "
            "roles/aiplatform.user and roles/iam.serviceAccountUser on the pipeline's "
            "service account"
        )
    elif code == 404:
        text = (
            f"{where} not found ({tag}) on {what}: check the project and region and that the "
            f"Vertex AI API is enabled: {message}"
        )
    elif code == 400:
        text = f"Vertex AI refused {what} as invalid ({tag}): {message}"
    else:
        text = f"Vertex AI refused {what} ({tag}): {message}"
    return BackendRefused(text)


def _unavailable(
    exc: BaseException, what: str, elapsed: float, attempts: int
) -> BackendUnavailable:
    cause = getattr(exc, "cause", None) or exc  # RetryError carries the last error
    tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
    return BackendUnavailable(
        f"Vertex AI unavailable for {what} ({tries} in {elapsed:.1f}s): {_describe(cause)}"
    )


def _release_frames(*errors: BaseException | None) -> None:
    """Clears the locals of the finished frames that failed calls' tracebacks keep alive.

    Those frames hold the request (the pipeline spec, as protobuf and as a ~100 KB JSON body) and,
    through api_core's retry loop and ``_call``'s ``on_error``, the error itself: a reference
    cycle that only the garbage collector's full collections free, and those run rarely in a
    process holding the client's long-lived objects. Every 409 of a duplicate delivery, and every
    failed attempt, would otherwise keep its request in memory until then.
    """
    todo = [e for e in errors if e is not None]
    seen: set[int] = set()
    while todo:
        error = todo.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)
        todo.extend(e for e in (error.__cause__, error.__context__) if e is not None)


# -- values --------------------------------------------------------------------------------------


def _jsonable(value: Any, where: str) -> Any:
    """Plain JSON values from what YAML and the configuration produce."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"{where}: {type(value).__name__} is not a JSON value")


def _state(job: PipelineJob) -> str:
    name = getattr(job.state, "name", str(job.state))
    return name.removeprefix(_STATE_PREFIX)


def _time(value: Any) -> str:
    if not value:
        return ""
    rfc3339 = getattr(value, "rfc3339", None)
    return str(rfc3339()) if callable(rfc3339) else str(value)


def _job_status(job: PipelineJob) -> JobStatus:
    labels = dict(job.labels)
    parameters: dict[str, Any] = {}
    if job.runtime_config:
        parameters = {k: _plain(v) for k, v in job.runtime_config.parameter_values.items()}
    return JobStatus(
        job_id=job.name.rsplit("/", 1)[-1],
        job_name=job.name,
        state=_state(job),
        run_key=labels.get(KEY_LABEL, ""),
        route=labels.get(ROUTE_LABEL, ""),
        create_time=_time(job.create_time),
        start_time=_time(job.start_time),
        end_time=_time(job.end_time),
        error=job.error.message if job.error else "",
        labels=labels,
        parameters=parameters,
    )


def _plain(value: Any) -> Any:
    """proto-plus maps and lists (of Values) as plain Python values."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, str | bytes):
        return value
    if hasattr(value, "__iter__"):
        return [_plain(v) for v in value]
    return value


# -- the backend ---------------------------------------------------------------------------------


class VertexBackend:
    """Starts and inspects Vertex AI PipelineJobs. One client per region, created on first use."""

    name = "vertex"

    def __init__(
        self,
        project: str,
        region: str,
        *,
        endpoint: str = "",
        deadline: float = 30.0,
        credentials: Credentials | None = None,
    ) -> None:
        if not project:
            raise ValueError("the vertex backend needs a project")
        self.project = project
        self.region = region
        self.endpoint = endpoint.strip().rstrip("/")
        self.deadline = float(deadline)
        self._credentials = credentials
        self._clients: dict[str, PipelineServiceClient] = {}
        self._lock = threading.Lock()
        self._specs: dict[str, Any] = {}
        # Jobs this instance created or saw refused as existing: a redelivery of the same change
        # is answered from here, without another create and GET (a duplicate storm's cost).
        self._known: OrderedDict[str, str] = OrderedDict()

    @classmethod
    def from_config(cls, config: Config) -> VertexBackend:
        return cls(
            config.project,
            config.region,
            endpoint=config.vertex_endpoint,
            deadline=config.submit_deadline_seconds,
        )

    def __repr__(self) -> str:
        where = self.endpoint or f"{self.region}-aiplatform.googleapis.com"
        return (
            f"VertexBackend(project={self.project!r}, region={self.region!r}, endpoint={where!r})"
        )

    # -- client ----------------------------------------------------------------------------

    def client(self, region: str = "") -> PipelineServiceClient:
        """The region's client, created once (thread-safe) on first use."""
        region = region or self.region
        client = self._clients.get(region)
        if client is not None:
            return client
        with self._lock:
            client = self._clients.get(region)
            if client is None:
                client = self._clients[region] = self._create_client(region)
        return client

    def _create_client(self, region: str) -> PipelineServiceClient:
        from google.cloud.aiplatform_v1 import PipelineServiceClient

        endpoint = self.endpoint
        if endpoint.startswith("http://"):
            from google.auth.credentials import AnonymousCredentials
            from google.cloud.aiplatform_v1.services.pipeline_service.transports.rest import (
                PipelineServiceRestTransport,
            )

            transport = PipelineServiceRestTransport(
                host=endpoint.removeprefix("http://"),
                credentials=self._credentials or AnonymousCredentials(),
                url_scheme="http",
            )
            return PipelineServiceClient(transport=transport)
        host = endpoint.removeprefix("https://") or f"{region}-aiplatform.googleapis.com"
        return PipelineServiceClient(
            credentials=self._credentials,
            transport="rest",
            client_options={"api_endpoint": host},
        )

    def _client_or_refuse(self, region: str) -> PipelineServiceClient:
        from google.auth import exceptions as auth_exc

        try:
            return self.client(region)
        except auth_exc.DefaultCredentialsError as exc:
            raise BackendRefused(f"no Google credentials for Vertex AI: {exc}") from exc

    # -- calls -----------------------------------------------------------------------------

    def _call(self, what: str, rpc: Callable[[float], T], deadline: float) -> T:
        """Run ``rpc(attempt_timeout)`` under the retry policy until ``deadline`` (monotonic).

        Raises the API's own exception for errors that are not retried (so callers can handle
        409 and 404), ``BackendUnavailable`` when the retries run out.
        """
        from google.api_core import exceptions as gexc

        started = time.monotonic()
        attempts = 0
        last_error: BaseException | None = None
        out_of_time = False

        def attempt() -> T:
            nonlocal attempts, out_of_time
            remaining = deadline - time.monotonic()
            if remaining < MIN_ATTEMPT_SECONDS:
                # Retryable, so the policy ends with RetryError; the last real error is reported.
                out_of_time = True
                raise gexc.DeadlineExceeded(f"no time left for {what}")
            attempts += 1
            return rpc(min(remaining, MAX_ATTEMPT_SECONDS))

        def on_error(exc: BaseException) -> None:
            nonlocal last_error
            if out_of_time:
                return
            last_error = exc
            log.info("%s: attempt %d failed: %s", what, attempts, _describe(exc))

        policy = retry_policy(deadline - started, on_error=on_error)
        gave_up: tuple[type[Exception], ...] = (gexc.RetryError, *retryable_types())
        try:
            return policy(attempt)()
        except gave_up as exc:
            elapsed = time.monotonic() - started
            error = _unavailable(last_error or exc, what, elapsed, attempts)
            _release_frames(exc, last_error)
            raise error from exc
        except BaseException as exc:  # the API's own errors (409, 404 ...), for the caller
            _release_frames(exc, last_error)
            raise

    def _translate(self, exc: Exception, what: str, where: str) -> SubmitError:
        from google.api_core import exceptions as gexc
        from google.auth import exceptions as auth_exc

        if isinstance(exc, gexc.GoogleAPICallError):
            return _refused(exc, what, where)
        if isinstance(exc, auth_exc.RefreshError | auth_exc.DefaultCredentialsError):
            return BackendRefused(f"Google credentials failed on {what}: {exc}")
        return BackendRefused(f"{what} failed: {_describe(exc)}")

    # -- Backend protocol --------------------------------------------------------------------

    def submit(self, request: RunRequest, template: PipelineTemplate) -> RunHandle:
        deadline = time.monotonic() + self.deadline
        project = request.project or self.project
        region = request.region or self.region
        parent = f"projects/{project}/locations/{region}"
        what = f"create pipeline job {request.job_id}"
        if not JOB_ID.match(request.job_id):
            raise BackendRefused(
                f"job id {request.job_id!r} is not valid for Vertex AI ([a-z][-a-z0-9]{{0,127}})"
            )
        known = self._remember(f"{parent}/pipelineJobs/{request.job_id}")
        if known:
            log.info("%s: created before by this instance; answering duplicate", what)
            return RunHandle(job_id=request.job_id, job_name=known, state="", created=False)
        client = self._client_or_refuse(region)
        job = self._pipeline_job(request, template)

        from google.api_core import exceptions as gexc

        def create(timeout: float) -> PipelineJob:
            return client.create_pipeline_job(
                parent=parent,
                pipeline_job=job,
                pipeline_job_id=request.job_id,
                retry=None,
                timeout=timeout,
            )

        try:
            created = self._call(what, create, deadline)
        except gexc.Conflict as exc:
            log.info("%s: %s; answering duplicate", what, _describe(exc))
            handle = self._existing(client, parent, request.job_id, deadline)
        except SubmitError:
            raise
        except Exception as exc:
            raise self._translate(exc, what, parent) from exc
        else:
            handle = RunHandle(
                job_id=request.job_id, job_name=created.name, state=_state(created), created=True
            )
        self._remember(f"{parent}/pipelineJobs/{request.job_id}", handle.job_name)
        return handle

    def _remember(self, key: str, job_name: str = "") -> str:
        """The job name known for ``key``; with ``job_name``, records it (bounded, LRU)."""
        with self._lock:
            if job_name:
                self._known[key] = job_name
                self._known.move_to_end(key)
                while len(self._known) > KNOWN_JOBS:
                    self._known.popitem(last=False)
                return job_name
            return self._known.get(key, "")

    def _existing(
        self, client: PipelineServiceClient, parent: str, job_id: str, deadline: float
    ) -> RunHandle:
        """The handle of the job that made a create answer 409."""
        name = f"{parent}/pipelineJobs/{job_id}"
        try:
            job = self._call(
                f"get pipeline job {job_id}",
                lambda timeout: client.get_pipeline_job(name=name, retry=None, timeout=timeout),
                deadline,
            )
        except Exception as exc:  # not found (deleted since), or no time left
            log.info("get pipeline job %s after 409: %s", job_id, _describe(exc))
            return RunHandle(job_id=job_id, job_name=name, state="", created=False)
        return RunHandle(job_id=job_id, job_name=job.name, state=_state(job), created=False)

    def get(self, job_id: str) -> JobStatus:
        if not JOB_ID.match(job_id):
            raise KeyError(job_id)
        from google.api_core import exceptions as gexc

        parent = f"projects/{self.project}/locations/{self.region}"
        name = f"{parent}/pipelineJobs/{job_id}"
        what = f"get pipeline job {job_id}"
        client = self._client_or_refuse(self.region)
        try:
            job = self._call(
                what,
                lambda timeout: client.get_pipeline_job(name=name, retry=None, timeout=timeout),
                time.monotonic() + self.deadline,
            )
        except gexc.NotFound:
            raise KeyError(job_id) from None
        except SubmitError:
            raise
        except Exception as exc:
            raise self._translate(exc, what, parent) from exc
        return _job_status(job)

    def list(self, *, route: str = "", limit: int = 100, state: str = "") -> list[JobStatus]:
        """The trigger's jobs (those labelled ``retrain-route``; one route's with ``route``),
        newest first, optionally in one ``state`` (SUCCEEDED, FAILED ...), across pages."""
        if limit <= 0:
            return []
        if route and not re.match(r"^[a-z0-9_-]{1,63}$", route):
            raise ValueError(f"not a valid route name: {route!r}")
        state = state.upper().removeprefix(_STATE_PREFIX)
        if state and not re.match(r"^[A-Z_]{1,40}$", state):
            raise ValueError(f"not a valid run state: {state!r}")
        conditions = [f'labels.{ROUTE_LABEL}="{route}"' if route else f"labels.{ROUTE_LABEL}:*"]
        if state:
            conditions.append(f'state="{_STATE_PREFIX}{state}"')
        from google.cloud.aiplatform_v1 import ListPipelineJobsRequest

        parent = f"projects/{self.project}/locations/{self.region}"
        what = f"list pipeline jobs{' of route ' + route if route else ''}"
        client = self._client_or_refuse(self.region)
        deadline = time.monotonic() + self.deadline
        out: list[JobStatus] = []
        token = ""
        while len(out) < limit:
            request = ListPipelineJobsRequest(
                parent=parent,
                filter=" AND ".join(conditions),
                order_by="create_time desc",
                page_size=min(limit - len(out), MAX_PAGE_SIZE),
                page_token=token,
            )

            def page(timeout: float, request: ListPipelineJobsRequest = request) -> Any:
                return client.list_pipeline_jobs(request=request, retry=None, timeout=timeout)

            try:
                pager = self._call(what, page, deadline)
            except SubmitError:
                raise
            except Exception as exc:
                raise self._translate(exc, what, parent) from exc
            out.extend(_job_status(job) for job in pager.pipeline_jobs)
            token = pager.next_page_token
            if not token:
                break
        return out[:limit]

    # -- the request body ----------------------------------------------------------------------

    def _spec(self, template: PipelineTemplate) -> Any:
        """The template as a protobuf Struct, converted once per template digest."""
        spec = self._specs.get(template.digest)
        if spec is not None:
            return spec
        from google.protobuf import json_format, struct_pb2

        try:
            spec = json_format.ParseDict(
                _jsonable(template.document, "pipelineSpec"), struct_pb2.Struct()
            )
        except (TypeError, ValueError, json_format.ParseError) as exc:
            raise TemplateError(
                f"template {template.uri} cannot be sent to Vertex AI: {exc}"
            ) from exc
        with self._lock:
            if len(self._specs) > 32:
                self._specs.clear()
            self._specs[template.digest] = spec
        return spec

    def _pipeline_job(self, request: RunRequest, template: PipelineTemplate) -> PipelineJob:
        from google.cloud import aiplatform_v1 as v1
        from google.protobuf import json_format, struct_pb2

        values: dict[str, struct_pb2.Value] = {}
        for key, value in request.parameter_values.items():
            try:
                values[key] = json_format.ParseDict(
                    _jsonable(value, f"parameter {key}"), struct_pb2.Value()
                )
            except (TypeError, ValueError, json_format.ParseError) as exc:
                raise BackendRefused(
                    f"parameter {key!r} cannot be sent to Vertex AI: {exc}"
                ) from exc
        job = v1.PipelineJob(
            display_name=request.display_name,
            pipeline_spec=self._spec(template),
            labels=dict(request.labels),
            runtime_config=v1.PipelineJob.RuntimeConfig(
                gcs_output_directory=request.pipeline_root,
                parameter_values=values,
            ),
            service_account=request.service_account,
            network=request.network,
        )
        if request.encryption_key:
            job.encryption_spec = v1.EncryptionSpec(kms_key_name=request.encryption_key)
        if template.uri.startswith("https://"):  # an Artifact Registry template
            job.template_uri = template.uri
        return job
