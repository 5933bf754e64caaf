"""A protocol-level fake of the Vertex AI REST API (v1) for pipeline jobs.

It speaks what ``google.cloud.aiplatform_v1.PipelineServiceClient(transport="rest")`` sends, so
the real client can be pointed at it (``http://127.0.0.1:PORT``, anonymous credentials):

- ``POST /v1/projects/{p}/locations/{l}/pipelineJobs?pipelineJobId=ID`` with a PipelineJob JSON
  body (camelCase, as protobuf's JSON mapping writes it) creates a job in ``PIPELINE_STATE_PENDING``;
  a second create with the same id answers ``409 ALREADY_EXISTS``.
- ``GET .../pipelineJobs/{id}`` returns the job; ``404 NOT_FOUND`` when there is none.
- ``GET .../pipelineJobs`` lists jobs with ``pageSize``/``pageToken``, ``filter`` (the AIP-160
  subset the real service documents: ``labels.k="v"``, ``labels.k:*``, ``display_name``,
  ``pipeline_name``, ``pipeline_job_user_id``, ``template_uri``, ``state``, ``create_time`` ...,
  with ``AND``/``OR``/``NOT`` and parentheses) and ``orderBy`` (default ``create_time desc``).
- ``POST .../pipelineJobs/{id}:cancel`` moves an active job to ``CANCELLING``.

Requests are validated like the real service does (``400 INVALID_ARGUMENT``): the job id must match
``[a-z][-a-z0-9]{0,127}`` (a letter first), labels follow Google Cloud's label rules, ``pipelineSpec`` is required
and parameter values must match the spec's ``root.inputDefinitions``. Errors use Google's JSON error
body ``{"error": {"code", "message", "status"}}``. When the client asks for
``$alt=json;enum-encoding=int`` (the GAPIC REST transport always does) enums are answered as numbers.

Tests steer it directly::

    fake = FakeVertex().start()
    fake.inject("create", status=503, times=None)   # every create fails until clear_faults()
    fake.inject("create", hang=5)                   # sleep past the client's deadline
    fake.inject("create", reset=True)               # close the socket without answering
    fake.inject("create", reset=True, after=True)   # create the job, then lose the answer
    fake.inject("create", conflict_unknown=True)    # 409 for an id it never stored
    fake.set_state(job_id, "SUCCEEDED")
    fake.requests, fake.creates, fake.jobs
    fake.stop()

Other processes steer it over HTTP under ``/_fake/`` (see :meth:`_Handler._control`). Standalone:
``python -m tests.fakes.vertex --port 8085``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import datetime as dt
import fnmatch
import hashlib
import json
import re
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["STATES", "FakeVertex", "Fault", "RecordedRequest"]

# google.cloud.aiplatform.v1.PipelineState, in enum-number order.
STATES = (
    "PIPELINE_STATE_UNSPECIFIED",
    "PIPELINE_STATE_QUEUED",
    "PIPELINE_STATE_PENDING",
    "PIPELINE_STATE_RUNNING",
    "PIPELINE_STATE_SUCCEEDED",
    "PIPELINE_STATE_FAILED",
    "PIPELINE_STATE_CANCELLING",
    "PIPELINE_STATE_CANCELLED",
    "PIPELINE_STATE_PAUSED",
)
_TERMINAL = {"PIPELINE_STATE_SUCCEEDED", "PIPELINE_STATE_FAILED", "PIPELINE_STATE_CANCELLED"}

# HTTP status -> google.rpc.Code name, as Google's REST frontends answer them.
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_DEFAULT_MESSAGES = {
    400: "Request contains an invalid argument.",
    401: "Request had invalid authentication credentials. Expected OAuth 2 access token, "
    "login cookie or other valid authentication credential.",
    403: "Permission 'aiplatform.pipelineJobs.create' denied on resource "
    "'//aiplatform.googleapis.com/{parent}' (or it may not exist).",
    404: "Requested entity was not found.",
    409: "The PipelineJob already exists.",
    429: "Quota exceeded for aiplatform.googleapis.com/pipeline_job_creation_requests.",
    500: "Internal error encountered.",
    501: "Operation is not implemented, or supported, or enabled.",
    503: "The service is currently unavailable.",
    504: "The request timed out. Please try again.",
}
# 502 comes from Google's frontend, not the API: an HTML page, not a JSON error.
_BAD_GATEWAY_HTML = (
    "<!DOCTYPE html><html lang=en><meta charset=utf-8><title>Error 502 (Server Error)!!1</title>"
    "<p><b>502.</b> <ins>That's an error.</ins><p>The server encountered a temporary error and "
    "could not complete your request.<p>Please try again in 30 seconds.</html>"
)

# Fields of google.cloud.aiplatform.v1.PipelineJob and its RuntimeConfig (JSON names).
_JOB_FIELDS = frozenset(
    [
        "name",
        "displayName",
        "createTime",
        "startTime",
        "endTime",
        "updateTime",
        "pipelineSpec",
        "state",
        "jobDetail",
        "error",
        "labels",
        "runtimeConfig",
        "encryptionSpec",
        "serviceAccount",
        "network",
        "reservedIpRanges",
        "pscInterfaceConfig",
        "templateUri",
        "templateMetadata",
        "scheduleName",
        "preflightValidations",
    ]
)
_OUTPUT_ONLY = ("name", "createTime", "startTime", "endTime", "updateTime", "state", "jobDetail")
_RUNTIME_FIELDS = frozenset(
    ["parameters", "gcsOutputDirectory", "parameterValues", "failurePolicy", "inputArtifacts"]
)

# Vertex AI's PipelineJob id: a lowercase letter, then up to 127 of a-z, 0-9 and '-'
# (https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.pipelineJobs/create).
_JOB_ID = re.compile(r"^[a-z][-a-z0-9]{0,127}$")
_PIPELINE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")
_LABEL_KEY = re.compile(r"^[^\W\d_A-Z][\w-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[\w-]{0,63}$")
_SERVICE_ACCOUNT = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]+$")
_NETWORK = re.compile(r"^projects/[0-9]+/global/networks/[^/]+$")
_KMS_KEY = re.compile(r"^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$")
_PATH = re.compile(
    r"^/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/pipelineJobs"
    r"(?:/(?P<job>[^/:]+)(?P<verb>:[a-zA-Z]+)?)?$"
)
_OPS = ("create", "get", "list", "cancel", "*")
MAX_BODY_BYTES = 32 << 20


@dataclass
class Fault:
    """One injected failure, taken by the next ``times`` requests of ``op``.

    ``after=False`` (the default): the request is not processed at all. ``after=True``: it is
    processed (a create stores the job) and only the answer is replaced: a lost or failed reply.
    """

    op: str
    status: int | None = None
    message: str = ""
    hang: float = 0.0
    reset: bool = False
    conflict_unknown: bool = False
    after: bool = False
    times: int | None = 1
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    rpc_status: str = ""
    used: int = 0


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    op: str
    job_id: str = ""
    status: int = 0  # 0: no answer was sent (reset, or the client went away)
    fault: Fault | None = None
    at: float = 0.0

    @property
    def answered(self) -> bool:
        return self.status != 0


class ApiError(Exception):
    """An answer in Google's error format."""

    def __init__(self, code: int, message: str, status: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or _STATUS_NAMES.get(code, "UNKNOWN")

    def payload(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "status": self.status}}


def _invalid(message: str) -> ApiError:
    return ApiError(400, message)


class _Dropped(Exception):
    """The connection was closed without an answer."""


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: str) -> dt.datetime:
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    # Python 3.11 accepts at most 6 fractional digits.
    value = re.sub(r"(\.\d{6})\d+", r"\1", value)
    moment = dt.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError("no time zone")
    return moment


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _normalise_keys(message: dict[str, Any], known: frozenset[str], where: str) -> dict[str, Any]:
    """Protobuf's JSON parser takes camelCase and snake_case names and rejects unknown ones."""
    out: dict[str, Any] = {}
    for key, value in message.items():
        name = _camel(key)
        if name not in known:
            raise _invalid(
                f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}': "
                "Cannot find field."
            )
        out[name] = value
    return out


class FakeVertex:
    """The fake server. Thread-safe; every public attribute may be read while it serves."""

    def __init__(
        self,
        port: int = 0,
        *,
        project_numbers: dict[str, str] | None = None,
        latency: float = 0.0,
        system_labels: bool = False,
    ) -> None:
        """``project_numbers`` maps project ids to numbers: like the real service, the fake then
        names jobs ``projects/<number>/...`` while accepting either form in requests.
        ``latency`` delays every answer. ``system_labels`` adds the label Vertex adds to
        every run (``vertex-ai-pipelines-run-billing-id``)."""
        self._requested_port = port
        self.project_numbers = dict(project_numbers or {})
        self.latency = latency
        self.system_labels = system_labels
        self.jobs: dict[str, dict[str, Any]] = {}
        self.requests: list[RecordedRequest] = []
        self._faults: list[Fault] = []
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._last_time = dt.datetime.min.replace(tzinfo=dt.UTC)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeVertex:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", self._requested_port), _Handler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-vertex-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes hanging handlers
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeVertex:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the fake Vertex server is not running")
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- steering --------------------------------------------------------------------------

    def inject(
        self,
        op: str,
        *,
        status: int | None = None,
        message: str = "",
        hang: float = 0.0,
        reset: bool = False,
        conflict_unknown: bool = False,
        after: bool = False,
        times: int | None = 1,
        body: str | None = None,
        headers: dict[str, str] | None = None,
        rpc_status: str = "",
    ) -> Fault:
        """Queue a fault for the next ``times`` requests of ``op`` (``None``: all, until cleared).

        ``op`` is ``create``, ``get``, ``list``, ``cancel`` or ``*``. Faults are taken in the
        order they were injected. A fault may combine ``hang`` with ``status`` or ``reset``.
        ``rpc_status`` overrides the error's ``status`` name (``ABORTED`` for a 409 that is a
        concurrency conflict rather than an existing id); ``body`` replaces the whole answer.
        """
        if op not in _OPS:
            raise ValueError(f"op must be one of {', '.join(_OPS)}, got {op!r}")
        if status is not None and not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error status, got {status}")
        if not (status or hang or reset or conflict_unknown):
            raise ValueError("a fault needs status, hang, reset or conflict_unknown")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1, or None for every request")
        fault = Fault(
            op=op,
            status=status,
            message=message,
            hang=hang,
            reset=reset,
            conflict_unknown=conflict_unknown,
            after=after,
            times=times,
            body=body,
            headers=dict(headers or {}),
            rpc_status=rpc_status,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def reset(self) -> None:
        """Forget every job, request and fault."""
        with self._lock:
            self.jobs.clear()
            self.requests.clear()
            self._faults.clear()

    def set_state(self, job_id: str, state: str, *, error: str | None = None) -> dict[str, Any]:
        """Advance a job: ``RUNNING``, ``SUCCEEDED``, ``FAILED`` ... (prefix optional)."""
        name = state if state.startswith("PIPELINE_STATE_") else f"PIPELINE_STATE_{state}"
        if name not in STATES:
            raise ValueError(f"unknown pipeline state {state!r}")
        with self._lock:
            job = self.jobs[job_id]
            now = self._now()
            job["state"] = name
            job["updateTime"] = now
            if name != "PIPELINE_STATE_PENDING" and name != "PIPELINE_STATE_QUEUED":
                job.setdefault("startTime", now)
            if name in _TERMINAL:
                job["endTime"] = now
            if error is not None or name == "PIPELINE_STATE_FAILED":
                job["error"] = {
                    "code": 9,
                    "message": error or "The DAG failed because some tasks failed.",
                }
            return copy.deepcopy(job)

    def add_job(
        self, job_id: str, *, project: str = "p", location: str = "us-central1", **fields: Any
    ) -> dict[str, Any]:
        """Store a job directly, as if created earlier (``fields`` are PipelineJob JSON fields)."""
        with self._lock:
            now = self._now()
            job: dict[str, Any] = {
                "name": f"{self._parent(project, location)}/pipelineJobs/{job_id}",
                "displayName": job_id,
                "createTime": now,
                "updateTime": now,
                "state": "PIPELINE_STATE_PENDING",
                "pipelineSpec": {"pipelineInfo": {"name": "pipeline"}, "root": {}},
                "runtimeConfig": {},
            }
            job.update(fields)
            self.jobs[job_id] = job
            return copy.deepcopy(job)

    @property
    def creates(self) -> int:
        """How many create requests arrived (answered or not)."""
        with self._lock:
            return sum(1 for r in self.requests if r.op == "create")

    def requests_for(self, op: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.op == op]

    def wait_until(self, predicate: Callable[[FakeVertex], bool], timeout: float = 5.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate(self):
                return True
            time.sleep(0.01)
        return predicate(self)

    # -- internals ---------------------------------------------------------------------------

    def _now(self) -> str:
        """Strictly increasing timestamps, so that create_time orders jobs."""
        now = dt.datetime.now(dt.UTC)
        if now <= self._last_time:
            now = self._last_time + dt.timedelta(microseconds=1)
        self._last_time = now
        return _rfc3339(now)

    def _parent(self, project: str, location: str) -> str:
        return f"projects/{self.project_numbers.get(project, project)}/locations/{location}"

    def _take_fault(self, op: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.op in (op, "*"):
                    fault.used += 1
                    if fault.times is not None and fault.used >= fault.times:
                        self._faults.remove(fault)
                    return fault
        return None

    def _sleep(self, seconds: float) -> bool:
        """Sleep; False when the server is stopping meanwhile."""
        return not self._stopping.wait(seconds)

    def _find(self, project: str, location: str, job_id: str) -> dict[str, Any]:
        job = self.jobs.get(job_id)
        if job is None or not job["name"].startswith(self._parent(project, location) + "/"):
            raise ApiError(
                404,
                f'PipelineJob "projects/{project}/locations/{location}/pipelineJobs/{job_id}" '
                "not found.",
            )
        return job

    def handle(
        self, op: str, match: dict[str, str], query: dict[str, str], raw: bytes
    ) -> tuple[int, dict[str, Any]]:
        project, location, job_id = match["project"], match["location"], match.get("job") or ""
        with self._lock:
            if op == "create":
                return 200, self._create(project, location, query, raw)
            if op == "get":
                return 200, copy.deepcopy(self._find(project, location, job_id))
            if op == "list":
                return 200, self._list(project, location, query)
            if op == "cancel":
                job = self._find(project, location, job_id)
                if job["state"] in _TERMINAL:
                    raise ApiError(
                        400,
                        f"Cannot cancel the PipelineJob {job['name']} in state {job['state']}.",
                        "FAILED_PRECONDITION",
                    )
                self.set_state(job_id, "CANCELLING")
                return 200, {}
        raise ApiError(501, f"{op} is not implemented by the fake.")

    def _create(
        self, project: str, location: str, query: dict[str, str], raw: bytes
    ) -> dict[str, Any]:
        parent = self._parent(project, location)
        try:
            body = json.loads(raw or b"{}")
        except ValueError as exc:
            raise _invalid(f"Invalid JSON payload received. {exc}") from None
        if not isinstance(body, dict):
            raise _invalid("Invalid JSON payload received. Expected an object.")
        job = _normalise_keys(body, _JOB_FIELDS, "pipeline_job")
        for name in _OUTPUT_ONLY:
            job.pop(name, None)  # output-only fields are ignored on create

        spec = job.get("pipelineSpec")
        if not isinstance(spec, dict) or not spec:
            raise _invalid("PipelineJob.pipeline_spec is required.")
        pipeline_name = (spec.get("pipelineInfo") or {}).get("name", "")
        if not isinstance(spec.get("root"), dict):
            raise _invalid("The pipeline spec is invalid: the root DAG is missing.")
        if not isinstance(pipeline_name, str) or not _PIPELINE_NAME.match(pipeline_name):
            raise _invalid(
                f'The pipeline name "{pipeline_name}" is invalid. The name must match the regular '
                "expression [a-z0-9][a-z0-9-]{0,127}."
            )

        job_id = query.get("pipelineJobId", query.get("pipeline_job_id", ""))
        if not job_id:
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
            job_id = f"{pipeline_name[:113]}-{stamp}"
            while job_id in self.jobs:
                job_id = f"{job_id[:120]}-{hashlib.sha1(job_id.encode()).hexdigest()[:6]}"
        if not _JOB_ID.match(job_id):
            raise _invalid(
                f'Invalid PipelineJob ID "{job_id}". The ID must match the regular expression '
                "[a-z][-a-z0-9]{0,127}."
            )

        display = job.get("displayName", "")
        if not isinstance(display, str) or len(display) > 128:
            raise _invalid("PipelineJob.display_name must be a string of at most 128 characters.")
        _check_labels(job.get("labels", {}))
        account = job.get("serviceAccount", "")
        if account and not _SERVICE_ACCOUNT.match(str(account)):
            raise _invalid(f'Service account "{account}" is not a valid email address.')
        network = job.get("network", "")
        if network and not _NETWORK.match(str(network)):
            raise _invalid(
                f'Network "{network}" is invalid. The format is '
                "projects/{project_number}/global/networks/{network}."
            )
        encryption = job.get("encryptionSpec") or {}
        if encryption:
            key = _normalise_keys(
                encryption, frozenset({"kmsKeyName"}), "pipeline_job.encryption_spec"
            )
            if not _KMS_KEY.match(str(key.get("kmsKeyName", ""))):
                raise _invalid(f'KMS key name "{key.get("kmsKeyName", "")}" is invalid.')
            job["encryptionSpec"] = key
        template_uri = job.get("templateUri", "")
        if template_uri and not str(template_uri).startswith(("https://", "gs://")):
            raise _invalid(f'Template URI "{template_uri}" is not supported.')

        runtime = _normalise_keys(
            job.get("runtimeConfig") or {}, _RUNTIME_FIELDS, "pipeline_job.runtime_config"
        )
        root_dir = runtime.get("gcsOutputDirectory") or spec.get("defaultPipelineRoot", "")
        if not root_dir:
            raise _invalid(
                "Pipeline root is not specified: set runtime_config.gcs_output_directory or the "
                "pipeline's default pipeline root."
            )
        if not str(root_dir).startswith("gs://"):
            raise _invalid(f'Pipeline root "{root_dir}" must be a Cloud Storage path (gs://...).')
        _check_parameters(spec, runtime.get("parameterValues") or {})
        job["runtimeConfig"] = runtime

        if job_id in self.jobs:
            raise ApiError(409, f'PipelineJob "{parent}/pipelineJobs/{job_id}" already exists.')
        now = self._now()
        stored: dict[str, Any] = {
            "name": f"{parent}/pipelineJobs/{job_id}",
            "displayName": display or pipeline_name,
            "createTime": now,
            "updateTime": now,
            "state": "PIPELINE_STATE_PENDING",
            **{k: v for k, v in job.items() if k not in ("displayName",)},
        }
        if self.system_labels:
            labels = dict(stored.get("labels") or {})
            labels["vertex-ai-pipelines-run-billing-id"] = str(abs(hash(job_id)) % 10**18)
            stored["labels"] = labels
        self.jobs[job_id] = stored
        return copy.deepcopy(stored)

    def _list(self, project: str, location: str, query: dict[str, str]) -> dict[str, Any]:
        prefix = self._parent(project, location) + "/"
        try:
            size = int(query.get("pageSize", query.get("page_size", "0")) or 0)
        except ValueError:
            raise _invalid("page_size must be an integer.") from None
        if size < 0:
            raise _invalid("page_size must not be negative.")
        size = min(size or 100, 1000)
        text = query.get("filter", "")
        order = query.get("orderBy", query.get("order_by", ""))
        predicate = _Filter(text).predicate() if text.strip() else (lambda job: True)
        jobs = [j for j in self.jobs.values() if j["name"].startswith(prefix) and predicate(j)]
        jobs = _order(jobs, order)
        scope = hashlib.sha256(f"{prefix}|{text}|{order}".encode()).hexdigest()[:16]
        offset = 0
        token = query.get("pageToken", query.get("page_token", ""))
        if token:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
                offset = int(decoded["offset"])
                if decoded["scope"] != scope or offset < 0:
                    raise ValueError
            except (ValueError, KeyError, TypeError):
                raise _invalid("The page token is invalid.") from None
        page = jobs[offset : offset + size]
        out: dict[str, Any] = {}
        if page:
            out["pipelineJobs"] = copy.deepcopy(page)
        if offset + size < len(jobs):
            raw = json.dumps({"offset": offset + size, "scope": scope}).encode()
            out["nextPageToken"] = base64.urlsafe_b64encode(raw).decode()
        return out


def _check_labels(labels: Any) -> None:
    if not isinstance(labels, dict):
        raise _invalid("PipelineJob.labels must be a map of strings.")
    if len(labels) > 64:
        raise _invalid(f"At most 64 labels are allowed, got {len(labels)}.")
    for key, value in labels.items():
        if not isinstance(value, str):
            raise _invalid(f'Label value for key "{key}" must be a string.')
        if not _LABEL_KEY.match(key) or key.startswith("goog"):
            raise _invalid(
                f'Label key "{key}" is invalid. Keys must start with a lowercase letter, be at most '
                "63 characters and contain only lowercase letters, digits, underscores and dashes."
            )
        if not _LABEL_VALUE.match(value) or value != value.lower():
            raise _invalid(
                f'Label value "{value}" of key "{key}" is invalid. Values must be at most 63 '
                "characters and contain only lowercase letters, digits, underscores and dashes."
            )


def _check_parameters(spec: dict[str, Any], values: Any) -> None:
    if not isinstance(values, dict):
        raise _invalid("runtime_config.parameter_values must be a map.")
    definitions = ((spec.get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {}
    for name, value in values.items():
        definition = definitions.get(name)
        if definition is None:
            raise _invalid(
                f"The pipeline parameter {name} is not found in the pipeline job input definitions."
            )
        kind = definition.get("parameterType", "")
        if not _type_matches(kind, value):
            raise _invalid(
                f"The value of the pipeline parameter {name} is {json.dumps(value)[:80]}, which "
                f"does not match its type {kind}."
            )
    for name, definition in definitions.items():
        if name in values or definition.get("isOptional") or "defaultValue" in definition:
            continue
        raise _invalid(f"The pipeline parameter {name} is required but not specified.")


def _type_matches(kind: str, value: Any) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "STRING":
        return isinstance(value, str)
    if kind == "NUMBER_INTEGER":
        return number and float(value).is_integer()
    if kind == "NUMBER_DOUBLE":
        return number
    if kind == "BOOLEAN":
        return isinstance(value, bool)
    if kind == "LIST":
        return isinstance(value, list)
    if kind == "STRUCT":
        return isinstance(value, dict)
    return True  # PARAMETER_TYPE_ENUM_UNSPECIFIED, TASK_FINAL_STATUS ...


_ORDER_FIELDS = {
    "create_time": "createTime",
    "update_time": "updateTime",
    "start_time": "startTime",
    "end_time": "endTime",
}


def _order(jobs: list[dict[str, Any]], order_by: str) -> list[dict[str, Any]]:
    keys: list[tuple[str, bool]] = []
    for part in (order_by or "create_time desc").split(","):
        words = part.split()
        if not words:
            continue
        if (
            words[0] not in _ORDER_FIELDS
            or len(words) > 2
            or words[1:] not in ([], ["asc"], ["desc"])
        ):
            raise _invalid(f'Unsupported order_by "{order_by}".')
        keys.append((_ORDER_FIELDS[words[0]], words[1:] == ["desc"]))
    out = sorted(jobs, key=lambda j: str(j["name"]))
    for key, desc in reversed(keys):
        out.sort(key=_time_key(key), reverse=desc)
    return out


def _time_key(name: str) -> Callable[[dict[str, Any]], dt.datetime]:
    def key(job: dict[str, Any]) -> dt.datetime:
        return _parse_time(job[name]) if job.get(name) else _EPOCH

    return key


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<paren>[()])
      | (?P<op><=|>=|!=|=|<|>|:)
      | "(?P<dq>(?:[^"\\]|\\.)*)"
      | '(?P<sq>(?:[^'\\]|\\.)*)'
      | (?P<word>[^\s()<>=!:"']+)
    )""",
    re.VERBOSE,
)
_STRING_FIELDS = {
    "display_name": lambda j: j.get("displayName", ""),
    "pipeline_name": lambda j: (
        (j.get("pipelineSpec") or {}).get("pipelineInfo", {}).get("name", "")
    ),
    "pipeline_job_user_id": lambda j: j["name"].rsplit("/", 1)[-1],
    "template_uri": lambda j: j.get("templateUri", ""),
    "template_metadata.version": lambda j: (j.get("templateMetadata") or {}).get("version", ""),
    "state": lambda j: j.get("state", ""),
}


class _Filter:
    """AIP-160 filters as the Vertex list methods document them.

    Grammar: expression = sequence {AND sequence}; sequence = factor {factor} (implicit AND);
    factor = term {OR term}; term = [NOT | -] (restriction | "(" expression ")").
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = list(self._tokenize(text))
        self.pos = 0

    def _tokenize(self, text: str) -> Iterator[tuple[str, str]]:
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                return
            match = _TOKEN.match(text, pos)
            if not match or match.end() == pos:
                raise _invalid(f'Invalid filter "{text}" at position {pos}.')
            pos = match.end()
            kind = match.lastgroup or ""
            value = match.group(kind)
            if kind in ("dq", "sq"):
                yield "string", re.sub(r"\\(.)", r"\1", value)
            elif kind == "word" and value in ("AND", "OR", "NOT"):
                yield value, value
            else:
                yield kind, value

    def _peek(self) -> tuple[str, str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("end", "")

    def _next(self) -> tuple[str, str]:
        token = self._peek()
        self.pos += 1
        return token

    def _fail(self, why: str) -> ApiError:
        return _invalid(f'Invalid filter "{self.text}": {why}.')

    def predicate(self) -> Callable[[dict[str, Any]], bool]:
        result = self._expression()
        if self._peek()[0] != "end":
            raise self._fail(f"unexpected {self._peek()[1]!r}")
        return result

    def _expression(self) -> Callable[[dict[str, Any]], bool]:
        parts = [self._sequence()]
        while self._peek()[0] == "AND":
            self._next()
            parts.append(self._sequence())
        return lambda job: all(p(job) for p in parts)

    def _sequence(self) -> Callable[[dict[str, Any]], bool]:
        parts = [self._factor()]
        while self._peek()[0] in ("word", "paren", "NOT") and self._peek()[1] != ")":
            parts.append(self._factor())
        return lambda job: all(p(job) for p in parts)

    def _factor(self) -> Callable[[dict[str, Any]], bool]:
        parts = [self._term()]
        while self._peek()[0] == "OR":
            self._next()
            parts.append(self._term())
        return lambda job: any(p(job) for p in parts)

    def _term(self) -> Callable[[dict[str, Any]], bool]:
        kind, value = self._peek()
        if kind == "NOT" or (kind == "word" and value == "-"):
            self._next()
            inner = self._term()
            return lambda job: not inner(job)
        if kind == "paren" and value == "(":
            self._next()
            inner = self._expression()
            if self._next() != ("paren", ")"):
                raise self._fail("missing )")
            return inner
        return self._restriction()

    def _restriction(self) -> Callable[[dict[str, Any]], bool]:
        kind, name = self._next()
        if kind != "word":
            raise self._fail(f"expected a field, got {name!r}")
        kind, op = self._next()
        if kind != "op":
            raise self._fail(f"expected a comparison after {name}")
        kind, arg = self._next()
        if kind not in ("word", "string"):
            raise self._fail(f"expected a value after {name}{op}")

        if name.startswith("labels."):
            key = name[len("labels.") :]
            if op == ":" and arg == "*":
                return lambda job: key in (job.get("labels") or {})
            if op in ("=", ":"):
                return lambda job: (job.get("labels") or {}).get(key) == arg
            if op == "!=":
                return lambda job: (job.get("labels") or {}).get(key) != arg
            raise self._fail(f"labels support = and : only, got {op}")
        if name in _TIME_FIELDS:
            try:
                bound = _parse_time(arg)
            except ValueError:
                raise self._fail(f"{name} must be an RFC 3339 time, got {arg!r}") from None
            compare = _COMPARE.get(op)
            if compare is None:
                raise self._fail(f"{name} does not support {op}")
            json_name = _TIME_FIELDS[name]
            return lambda job: (
                bool(job.get(json_name)) and compare(_parse_time(job[json_name]), bound)
            )
        getter = _STRING_FIELDS.get(name)
        if getter is None:
            raise self._fail(f"unsupported field {name}")
        if name == "state" and arg not in STATES:
            raise self._fail(f"unknown state {arg}")
        if op == "=":
            return lambda job: getter(job) == arg
        if op == "!=":
            return lambda job: getter(job) != arg
        if op == ":" and name != "state" and name != "pipeline_name":
            pattern = arg if "*" in arg else f"*{arg}*"
            return lambda job: fnmatch.fnmatchcase(getter(job), pattern)
        raise self._fail(f"{name} does not support {op}")


_TIME_FIELDS = {
    "create_time": "createTime",
    "update_time": "updateTime",
    "start_time": "startTime",
    "end_time": "endTime",
}
_COMPARE: dict[str, Callable[[dt.datetime, dt.datetime], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], fake: FakeVertex
    ) -> None:
        self.fake = fake
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError | OSError):
            return  # the client went away: expected with hangs and resets
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "ESF"
    sys_version = ""
    timeout = 120

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.fake._lock:
            self.server.fake._connections.add(self.connection)

    def finish(self) -> None:
        with self.server.fake._lock:
            self.server.fake._connections.discard(self.connection)
        with contextlib.suppress(OSError, ValueError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except _Dropped:
            self.close_connection = True
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    # -- plumbing ----------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise ApiError(413, "Request payload is too large.", "INVALID_ARGUMENT")
        return self.rfile.read(length) if length else b""

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Vary", "Origin, X-Origin, Referer")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        # Headers and body in one write: two small writes meet delayed ACKs (40 ms stalls).
        self._headers_buffer.append(b"\r\n" + body)
        self.flush_headers()

    def _send_json(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        body = json.dumps(payload, indent=2).encode()
        self._send(status, body, "application/json; charset=UTF-8", headers)

    def _send_fault(self, fault: Fault, record: RecordedRequest, parent: str) -> None:
        status = fault.status or 500
        if fault.body is not None:
            body = fault.body.encode()
            kind = "application/json; charset=UTF-8" if body.lstrip()[:1] == b"{" else "text/html"
            record.status = status
            self._send(status, body, kind, fault.headers)
        elif status == 502:
            record.status = status
            self._send(
                status, _BAD_GATEWAY_HTML.encode(), "text/html; charset=UTF-8", fault.headers
            )
        else:
            message = fault.message or _DEFAULT_MESSAGES.get(status, "Error.").format(parent=parent)
            record.status = status
            error = ApiError(status, message, fault.rpc_status)
            self._send_json(status, error.payload(), fault.headers)

    def _drop(self) -> None:
        """Close the connection with a TCP reset, without answering."""
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        for stream in (self.rfile, self.wfile):
            with contextlib.suppress(OSError, ValueError):
                stream.close()
        self.connection.close()
        raise _Dropped

    def _dispatch(self) -> None:
        fake = self.server.fake
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        path = unquote(url.path)
        if path.startswith("/_fake/"):
            self._control(path, self._read_body())
            return
        match = _PATH.match(path)
        op = _operation(self.command, match)
        record = RecordedRequest(
            method=self.command,
            path=path,
            query=query,
            headers=dict(self.headers.items()),
            body=None,
            op=op,
            job_id=(match.group("job") or query.get("pipelineJobId", "")) if match else "",
            at=time.time(),
        )
        try:
            raw = self._read_body()
        except ApiError as exc:
            record.status = exc.code
            self._send_json(exc.code, exc.payload())
            return
        if raw:
            try:
                record.body = json.loads(raw)
            except ValueError:
                record.body = raw
        with fake._lock:
            fake.requests.append(record)
        int_enums = "enum-encoding=int" in query.get("$alt", "")
        parent = f"projects/{match['project']}/locations/{match['location']}" if match else ""

        if fake.latency and not fake._sleep(fake.latency):
            self._drop()
        fault = fake._take_fault(op) if match and op != "unknown" else None
        record.fault = fault
        if fault is not None and not fault.after:
            if fault.hang and not fake._sleep(fault.hang):
                self._drop()
            if fault.reset:
                self._drop()
            if fault.status:
                self._send_fault(fault, record, parent)
                return
            if fault.conflict_unknown:
                job_id = record.job_id or "unknown"
                error = ApiError(
                    409, f'PipelineJob "{parent}/pipelineJobs/{job_id}" already exists.'
                )
                record.status = 409
                self._send_json(409, error.payload(), fault.headers)
                return

        if match is None or op == "unknown":
            status, payload = (
                404,
                ApiError(404, f"Method not found: {self.command} {path}").payload(),
            )
        else:
            try:
                status, payload = fake.handle(op, match.groupdict(), query, raw)
            except ApiError as exc:
                status, payload = exc.code, exc.payload()
        if int_enums:
            payload = _int_enums(payload)

        if fault is not None and fault.after:
            if fault.hang and not fake._sleep(fault.hang):
                self._drop()
            if fault.reset:
                self._drop()
            if fault.status:
                self._send_fault(fault, record, parent)
                return
        record.status = status
        self._send_json(status, payload)

    def _control(self, path: str, raw: bytes) -> None:
        """HTTP steering for a fake running in another process.

        ``GET /_fake/jobs``; ``GET /_fake/requests``; ``POST /_fake/inject`` with the keyword
        arguments of :meth:`FakeVertex.inject` (and ``op``); ``POST /_fake/jobs/{id}:setState``
        with ``{"state": ..., "error": ...}``; ``POST /_fake/clear_faults``; ``POST /_fake/reset``.
        """
        fake = self.server.fake
        try:
            args = json.loads(raw) if raw else {}
            if self.command == "GET" and path == "/_fake/jobs":
                with fake._lock:
                    self._send_json(
                        200, {"jobs": copy.deepcopy(fake.jobs), "creates": fake.creates}
                    )
                return
            if self.command == "GET" and path == "/_fake/requests":
                with fake._lock:
                    rows = [
                        {
                            "method": r.method,
                            "path": r.path,
                            "op": r.op,
                            "job_id": r.job_id,
                            "status": r.status,
                        }
                        for r in fake.requests
                    ]
                self._send_json(200, {"requests": rows})
                return
            if self.command == "POST" and path == "/_fake/inject":
                fault = fake.inject(args.pop("op"), **args)
                self._send_json(200, {"op": fault.op, "times": fault.times})
                return
            if self.command == "POST" and path == "/_fake/clear_faults":
                fake.clear_faults()
                self._send_json(200, {})
                return
            if self.command == "POST" and path == "/_fake/reset":
                fake.reset()
                self._send_json(200, {})
                return
            found = re.match(r"^/_fake/jobs/([^/:]+):setState$", path)
            if self.command == "POST" and found:
                job = fake.set_state(found.group(1), args["state"], error=args.get("error"))
                self._send_json(200, job)
                return
            self._send_json(404, ApiError(404, f"no control route {self.command} {path}").payload())
        except KeyError as exc:
            self._send_json(404, ApiError(404, f"not found: {exc}").payload())
        except (TypeError, ValueError) as exc:
            self._send_json(400, ApiError(400, str(exc)).payload())


def _operation(method: str, match: re.Match[str] | None) -> str:
    if match is None:
        return "unknown"
    job, verb = match.group("job"), match.group("verb")
    if method == "POST" and not job:
        return "create"
    if method == "GET" and not job:
        return "list"
    if method == "GET" and job and not verb:
        return "get"
    if method == "POST" and job and verb == ":cancel":
        return "cancel"
    return "unknown"


def _int_enums(payload: dict[str, Any]) -> dict[str, Any]:
    """Answer enums as numbers, as for ``$alt=json;enum-encoding=int``."""

    def convert(job: dict[str, Any]) -> dict[str, Any]:
        if isinstance(job.get("state"), str) and job["state"] in STATES:
            job = dict(job)
            job["state"] = STATES.index(job["state"])
        return job

    if "pipelineJobs" in payload:
        return {**payload, "pipelineJobs": [convert(j) for j in payload["pipelineJobs"]]}
    if "name" in payload:
        return convert(payload)
    return payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.vertex",
        description="Serve a fake Vertex AI pipelineJobs REST API on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free port)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    parser.add_argument(
        "--project-number",
        action="append",
        default=[],
        metavar="PROJECT=NUMBER",
        help="name jobs of PROJECT with its NUMBER, as the real service does",
    )
    parser.add_argument("--system-labels", action="store_true", help="add Vertex's own run label")
    args = parser.parse_args(argv)
    numbers = dict(item.split("=", 1) for item in args.project_number)
    fake = FakeVertex(
        args.port, project_numbers=numbers, latency=args.latency, system_labels=args.system_labels
    ).start()
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    sys.stdout.write(f"{fake.endpoint}\n")
    sys.stdout.flush()
    done.wait()
    fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
