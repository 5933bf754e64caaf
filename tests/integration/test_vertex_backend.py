"""The Vertex backend with the real ``aiplatform_v1`` client, over HTTP, against the fake server."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from retrain_trigger.backends import Backend, JobStatus, create_backend
from retrain_trigger.backends.vertex import VertexBackend
from retrain_trigger.config import Config
from retrain_trigger.errors import BackendRefused, BackendUnavailable
from retrain_trigger.model import RunRequest
from retrain_trigger.spec import PipelineTemplate, parse_template
from tests.fakes.vertex import FakeVertex

REPO = Path(__file__).resolve().parents[2]
PIPELINE_YAML = REPO / "tests" / "fakes" / "minimal_pipeline.yaml"
PROJECT = "test-project"
REGION = "us-central1"
PARENT = f"projects/{PROJECT}/locations/{REGION}"
JOB_ID = "mnist-data-part-0001-3f2a9c1d"
SERVICE_ACCOUNT = "trainer@test-project.iam.gserviceaccount.com"
# Short enough to keep the module fast, long enough for a few retries.
DEADLINE = 2.0
# What the deadline may be overrun by: the last attempt's bookkeeping, not another attempt.
MARGIN = 0.75


@pytest.fixture(scope="module")
def template() -> PipelineTemplate:
    return parse_template(PIPELINE_YAML.read_bytes(), "gs://ct-templates/minimal/v1.yaml")


@pytest.fixture
def backend(fake_vertex: FakeVertex) -> VertexBackend:
    backend = VertexBackend(PROJECT, REGION, endpoint=fake_vertex.endpoint, deadline=DEADLINE)
    backend.client()  # import aiplatform_v1 now, not inside the deadline of the first submit
    return backend


def run_request(job_id: str = JOB_ID, **changes: Any) -> RunRequest:
    fields: dict[str, Any] = {
        "route": "mnist",
        "run_key": "gs://ct-bucket/data/part-0001.csv#1732700000000000",
        "job_id": job_id,
        "display_name": "mnist-data",
        "template": "gs://ct-templates/minimal/v1.yaml",
        "pipeline_root": "gs://ct-bucket/pipeline-root",
        "parameter_values": {
            "data_uri": "gs://ct-bucket/data/part-0001.csv",
            "epochs": 5,
            "learning_rate": 0.05,
            "dry_run": True,
        },
        "labels": {"retrain-route": "mnist", "retrain-kind": "data", "retrain-key": "3f2a9c1d"},
        "service_account": SERVICE_ACCOUNT,
        "project": PROJECT,
        "region": REGION,
    }
    fields.update(changes)
    return RunRequest(**fields)


def statuses(fake: FakeVertex, op: str = "create") -> list[int]:
    return [r.status for r in fake.requests_for(op)]


# -- submit ---------------------------------------------------------------------------------------


def test_submit_creates_one_job_with_the_request_fields(
    backend: VertexBackend, fake_vertex: FakeVertex, template: PipelineTemplate
) -> None:
    handle = backend.submit(run_request(), template)

    assert handle.created is True
    assert handle.job_id == JOB_ID
    assert handle.job_name == f"{PARENT}/pipelineJobs/{JOB_ID}"
    assert handle.state == "PENDING"
    assert fake_vertex.creates == 1
    (create,) = fake_vertex.requests_for("create")
    assert create.method == "POST"
    assert create.path == f"/v1/{PARENT}/pipelineJobs"
    assert create.query["pipelineJobId"] == JOB_ID

    job = fake_vertex.jobs[JOB_ID]
    assert job["displayName"] == "mnist-data"
    assert job["labels"] == {
        "retrain-route": "mnist",
        "retrain-kind": "data",
        "retrain-key": "3f2a9c1d",
    }
    assert job["serviceAccount"] == SERVICE_ACCOUNT
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "gs://ct-bucket/pipeline-root"
    values = job["runtimeConfig"]["parameterValues"]
    assert values == {
        "data_uri": "gs://ct-bucket/data/part-0001.csv",
        "epochs": 5,
        "learning_rate": 0.05,
        "dry_run": True,
    }
    assert isinstance(values["data_uri"], str)
    assert values["dry_run"] is True  # a JSON boolean, not a string or number
    assert isinstance(values["epochs"], int | float) and not isinstance(values["epochs"], bool)
    assert job["pipelineSpec"]["pipelineInfo"]["name"] == "minimal-train"
    assert job["pipelineSpec"]["root"]["inputDefinitions"] == dict(
        template.document["root"]["inputDefinitions"]
    )
    assert "templateUri" not in job  # a gs:// template is sent inline only
    assert "network" not in job and "encryptionSpec" not in job


def test_submit_sends_optional_fields_and_the_artifact_registry_uri(
    backend: VertexBackend, fake_vertex: FakeVertex
) -> None:
    uri = "https://us-central1-kfp.pkg.dev/test-project/pipelines/minimal-train/v1"
    template = parse_template(PIPELINE_YAML.read_bytes(), uri)
    key = "projects/test-project/locations/us-central1/keyRings/ct/cryptoKeys/pipelines"
    network = "projects/123456789/global/networks/ct-vpc"

    backend.submit(run_request(encryption_key=key, network=network), template)

    job = fake_vertex.jobs[JOB_ID]
    assert job["templateUri"] == uri
    assert job["encryptionSpec"] == {"kmsKeyName": key}
    assert job["network"] == network


def test_second_submit_with_the_same_id_is_a_duplicate(
    backend: VertexBackend, fake_vertex: FakeVertex, template: PipelineTemplate
) -> None:
    first = backend.submit(run_request(), template)
    fake_vertex.set_state(JOB_ID, "RUNNING")
    # Another instance (a cold one) learns of the job from Vertex's 409.
    other = VertexBackend(PROJECT, REGION, endpoint=fake_vertex.endpoint, deadline=DEADLINE)

    second = other.submit(run_request(), template)

    assert first.created is True
    assert second.created is False
    assert second.job_name == first.job_name
    assert second.state == "RUNNING"
    assert statuses(fake_vertex) == [200, 409]  # the create, and the one Vertex refused
    assert list(fake_vertex.jobs) == [JOB_ID]


def test_the_same_instance_answers_a_redelivery_from_memory(
    backend: VertexBackend, fake_vertex: FakeVertex, template: PipelineTemplate
) -> None:
    first = backend.submit(run_request(), template)
    again = [backend.submit(run_request(), template) for _ in range(3)]

    assert [h.created for h in again] == [False, False, False]
    assert {h.job_name for h in again} == {first.job_name}
    assert statuses(fake_vertex) == [200]  # one create, nothing more


def test_duplicate_answers_the_name_the_service_gives(template: PipelineTemplate) -> None:
    """Vertex names jobs by project number; the duplicate answer carries that name, not ours."""
    with FakeVertex(project_numbers={PROJECT: "123456789"}) as fake:
        backend = VertexBackend(PROJECT, REGION, endpoint=fake.endpoint, deadline=DEADLINE)
        first = backend.submit(run_request(), template)
        second = backend.submit(run_request(), template)

    expected = f"projects/123456789/locations/{REGION}/pipelineJobs/{JOB_ID}"
    assert first.job_name == second.job_name == expected
    assert (first.created, second.created) == (True, False)


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"status": 429}, id="429-quota"),
        pytest.param({"status": 500}, id="500-internal"),
        pytest.param({"status": 502}, id="502-html-from-the-frontend"),
        pytest.param({"status": 503}, id="503-unavailable"),
        pytest.param({"status": 504}, id="504-deadline"),
        pytest.param({"reset": True}, id="connection-reset"),
        pytest.param({"status": 409, "rpc_status": "ABORTED"}, id="409-aborted"),
    ],
)
def test_transient_failure_then_success_is_submitted_after_a_retry(
    backend: VertexBackend,
    fake_vertex: FakeVertex,
    template: PipelineTemplate,
    fault: dict[str, Any],
) -> None:
    fake_vertex.inject("create", **fault)

    handle = backend.submit(run_request(), template)

    assert handle.created is True
    assert handle.job_name == f"{PARENT}/pipelineJobs/{JOB_ID}"
    assert fake_vertex.creates == 2
    assert statuses(fake_vertex)[-1] == 200
    assert list(fake_vertex.jobs) == [JOB_ID]


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        pytest.param({"status": 503}, "503 UNAVAILABLE", id="503-forever"),
        pytest.param({"status": 500}, "500 INTERNAL", id="500-forever"),
        pytest.param({"status": 429}, "429 RESOURCE_EXHAUSTED", id="429-forever"),
        pytest.param({"reset": True}, "ConnectionError", id="reset-forever"),
        pytest.param({"hang": 30}, "ReadTimeout", id="hang-past-the-deadline"),
    ],
)
def test_persistent_failure_is_unavailable_within_the_deadline(
    backend: VertexBackend,
    fake_vertex: FakeVertex,
    template: PipelineTemplate,
    fault: dict[str, Any],
    cause: str,
) -> None:
    fake_vertex.inject("create", times=None, **fault)

    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match=f"create pipeline job {JOB_ID}.*{cause}") as info:
        backend.submit(run_request(), template)
    elapsed = time.monotonic() - started

    assert elapsed < DEADLINE + MARGIN
    assert info.value.retryable is True
    assert info.value.status == 503
    if "hang" not in fault:
        assert fake_vertex.creates >= 2  # it did retry
    assert fake_vertex.jobs == {}


def test_a_lost_answer_is_retried_and_reads_as_a_duplicate(
    backend: VertexBackend, fake_vertex: FakeVertex, template: PipelineTemplate
) -> None:
    """The create succeeded but its answer was lost; the retry's 409 names the same job."""
    fake_vertex.inject("create", reset=True, after=True)

    handle = backend.submit(run_request(), template)

    assert handle.created is False
    assert handle.job_name == f"{PARENT}/pipelineJobs/{JOB_ID}"
    assert handle.state == "PENDING"
    assert statuses(fake_vertex) == [0, 409]
    assert list(fake_vertex.jobs) == [JOB_ID]


def test_conflict_for_an_id_the_service_does_not_show_is_still_a_duplicate(
    backend: VertexBackend, fake_vertex: FakeVertex, template: PipelineTemplate
) -> None:
    """409 means the id is taken (the job may have been deleted since): never create it again."""
    fake_vertex.inject("create", conflict_unknown=True)

    handle = backend.submit(run_request(), template)

    assert handle.created is False
    assert handle.job_name == f"{PARENT}/pipelineJobs/{JOB_ID}"
    assert handle.state == ""
    assert statuses(fake_vertex) == [409]
    assert statuses(fake_vertex, "get") == [404]
    assert fake_vertex.jobs == {}


def test_conflict_when_the_lookup_fails_is_still_a_duplicate(
    backend: VertexBackend, fake_vertex: FakeVertex, template: PipelineTemplate
) -> None:
    backend.submit(run_request(), template)
    fake_vertex.inject("get", status=503, times=None)

    started = time.monotonic()
    handle = backend.submit(run_request(), template)

    assert time.monotonic() - started < DEADLINE + MARGIN
    assert handle.created is False
    assert handle.job_name == f"{PARENT}/pipelineJobs/{JOB_ID}"


@pytest.mark.parametrize(
    ("status", "message"),
    [
        pytest.param(
            400, r"refused create pipeline job .* as invalid \(400 INVALID_ARGUMENT\)", id="400"
        ),
        # google-auth answers a 401 by refreshing the token; anonymous credentials cannot.
        pytest.param(401, r"credentials .*cannot be refreshed", id="401"),
        pytest.param(
            403, r"permission denied \(403 PERMISSION_DENIED\).*roles/aiplatform.user", id="403"
        ),
        pytest.param(
            404, rf"{PARENT} not found \(404 NOT_FOUND\).*Vertex AI API is enabled", id="404"
        ),
        pytest.param(501, r"refused create pipeline job .* \(501 UNIMPLEMENTED\)", id="501"),
    ],
)
def test_refusal_is_not_retried(
    backend: VertexBackend,
    fake_vertex: FakeVertex,
    template: PipelineTemplate,
    status: int,
    message: str,
) -> None:
    fake_vertex.inject("create", status=status, times=None)

    with pytest.raises(BackendRefused, match=message) as info:
        backend.submit(run_request(), template)

    assert info.value.retryable is False
    assert info.value.status == 502
    assert fake_vertex.creates == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param(
            {"labels": {"retrain-route": "MNIST"}}, 'Label value "MNIST"', id="label-uppercase"
        ),
        pytest.param({"labels": {"x" * 64: "v"}}, "Label key", id="label-key-too-long"),
        pytest.param(
            {"parameter_values": {"data_uri": "gs://b/x", "epochs": "five"}},
            "epochs .* does not match its type NUMBER_INTEGER",
            id="parameter-type",
        ),
        pytest.param(
            {"parameter_values": {"data_uri": "gs://b/x", "batch": 32}},
            "parameter batch is not found",
            id="unknown-parameter",
        ),
        pytest.param(
            {"parameter_values": {"epochs": 3}},
            "parameter data_uri is required",
            id="missing-parameter",
        ),
        pytest.param(
            {"pipeline_root": "/tmp/root"}, "must be a Cloud Storage path", id="pipeline-root"
        ),
    ],
)
def test_the_service_validation_is_a_refusal(
    backend: VertexBackend,
    fake_vertex: FakeVertex,
    template: PipelineTemplate,
    changes: dict[str, Any],
    message: str,
) -> None:
    with pytest.raises(BackendRefused, match=message):
        backend.submit(run_request(**changes), template)
    assert statuses(fake_vertex) == [400]


def test_an_invalid_job_id_is_refused_before_any_request(
    backend: VertexBackend, fake_vertex: FakeVertex, template: PipelineTemplate
) -> None:
    with pytest.raises(BackendRefused, match="job id 'Not_Valid' is not valid"):
        backend.submit(run_request("Not_Valid"), template)
    assert fake_vertex.requests == []


def test_concurrent_deliveries_of_one_event_create_one_job(
    backend: VertexBackend, fake_vertex: FakeVertex, template: PipelineTemplate
) -> None:
    handles = []
    barrier = threading.Barrier(6)

    def deliver() -> None:
        barrier.wait()
        handles.append(backend.submit(run_request(), template))

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(h.created for h in handles) == [False] * 5 + [True]
    assert {h.job_name for h in handles} == {f"{PARENT}/pipelineJobs/{JOB_ID}"}
    assert list(fake_vertex.jobs) == [JOB_ID]
    assert len(backend._clients) == 1  # one client, created once, shared by the threads


# -- get and list ---------------------------------------------------------------------------------


def test_get_reports_state_labels_and_times(
    backend: VertexBackend, fake_vertex: FakeVertex, template: PipelineTemplate
) -> None:
    backend.submit(run_request(), template)
    pending = backend.get(JOB_ID)
    fake_vertex.set_state(JOB_ID, "RUNNING")
    fake_vertex.set_state(JOB_ID, "FAILED", error="task train failed: OOMKilled")

    failed = backend.get(JOB_ID)

    assert pending.state == "PENDING" and pending.active and not pending.terminal
    assert pending.start_time == "" and pending.end_time == ""
    assert isinstance(failed, JobStatus)
    assert failed.state == "FAILED" and failed.terminal
    assert failed.job_name == f"{PARENT}/pipelineJobs/{JOB_ID}"
    assert failed.error == "task train failed: OOMKilled"
    assert failed.route == "mnist"
    assert failed.run_key == "3f2a9c1d"
    assert failed.labels["retrain-kind"] == "data"
    assert failed.parameters["dry_run"] is True
    assert failed.parameters["data_uri"] == "gs://ct-bucket/data/part-0001.csv"
    assert failed.create_time.endswith("Z") and failed.create_time <= failed.end_time


def test_get_of_an_unknown_job_is_a_key_error(
    backend: VertexBackend, fake_vertex: FakeVertex
) -> None:
    with pytest.raises(KeyError, match="nope"):
        backend.get("nope")
    with pytest.raises(KeyError):
        backend.get("../../other")
    assert statuses(fake_vertex, "get") == [404]


def test_get_retries_transient_failures(
    backend: VertexBackend, fake_vertex: FakeVertex, template: PipelineTemplate
) -> None:
    backend.submit(run_request(), template)
    fake_vertex.inject("get", status=503)
    assert backend.get(JOB_ID).state == "PENDING"
    assert statuses(fake_vertex, "get") == [503, 200]


def test_get_refused(backend: VertexBackend, fake_vertex: FakeVertex) -> None:
    fake_vertex.inject("get", status=403)
    with pytest.raises(BackendRefused, match="permission denied"):
        backend.get(JOB_ID)


def test_list_filters_by_route_newest_first(
    backend: VertexBackend, fake_vertex: FakeVertex, template: PipelineTemplate
) -> None:
    for i in range(3):
        backend.submit(run_request(f"mnist-data-{i}"), template)
    other = {"retrain-route": "fraud", "retrain-kind": "code", "retrain-key": "aa"}
    backend.submit(run_request("fraud-code-0", labels=other), template)

    mnist = backend.list(route="mnist")
    everything = backend.list()
    newest = backend.list(limit=2)

    assert [s.job_id for s in mnist] == ["mnist-data-2", "mnist-data-1", "mnist-data-0"]
    assert all(s.route == "mnist" for s in mnist)
    assert [s.job_id for s in everything] == ["fraud-code-0", *[s.job_id for s in mnist]]
    assert [s.job_id for s in newest] == ["fraud-code-0", "mnist-data-2"]
    (first, *_) = fake_vertex.requests_for("list")
    assert first.query["filter"] == 'labels.retrain-route="mnist"'
    assert first.query["orderBy"] == "create_time desc"


def test_list_follows_pages_up_to_the_limit(
    backend: VertexBackend, fake_vertex: FakeVertex
) -> None:
    for i in range(130):
        fake_vertex.add_job(
            f"mnist-data-{i:03d}", project=PROJECT, labels={"retrain-route": "mnist"}
        )
    fake_vertex.add_job("fraud-data-0", project=PROJECT, labels={"retrain-route": "fraud"})

    statuses_ = backend.list(route="mnist", limit=120)

    assert len(statuses_) == 120
    assert statuses_[0].job_id == "mnist-data-129"
    assert statuses_[-1].job_id == "mnist-data-010"
    pages = fake_vertex.requests_for("list")
    assert [r.query.get("pageSize") for r in pages] == ["100", "20"]
    assert "pageToken" not in pages[0].query and pages[1].query["pageToken"]


def test_list_with_no_limit_asks_nothing(backend: VertexBackend, fake_vertex: FakeVertex) -> None:
    assert backend.list(limit=0) == []
    assert fake_vertex.requests == []


# -- construction ---------------------------------------------------------------------------------


def test_created_from_config_through_the_backend_factory(
    fake_vertex: FakeVertex, template: PipelineTemplate
) -> None:
    config = Config(
        routes=(),
        project=PROJECT,
        region=REGION,
        backend="vertex",
        vertex_endpoint=fake_vertex.endpoint,
        submit_deadline_seconds=4.0,
    )

    backend = create_backend(config)

    assert isinstance(backend, VertexBackend) and isinstance(backend, Backend)
    assert backend.deadline == 4.0
    assert backend.submit(run_request(), template).created is True


def test_default_endpoint_is_regional_over_rest() -> None:
    from google.auth.credentials import AnonymousCredentials

    backend = VertexBackend(PROJECT, "europe-west4", credentials=AnonymousCredentials())
    client = backend.client()
    assert client.api_endpoint == "europe-west4-aiplatform.googleapis.com"
    assert type(client.transport).__name__ == "PipelineServiceRestTransport"
    assert backend.client() is client


def test_https_endpoint_is_used_as_the_host() -> None:
    from google.auth.credentials import AnonymousCredentials

    backend = VertexBackend(
        PROJECT,
        REGION,
        endpoint="https://us-central1-aiplatform.example.internal",
        credentials=AnonymousCredentials(),
    )
    assert backend.client().api_endpoint == "us-central1-aiplatform.example.internal"


def test_importing_the_backend_does_not_import_the_vertex_client() -> None:
    code = (
        "import sys, retrain_trigger.backends.vertex\n"
        "heavy = [m for m in sys.modules if m.startswith(('google.cloud.aiplatform', 'grpc'))]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert result.stdout.strip() == ""


# -- the fake itself, through the real client ------------------------------------------------------


@pytest.fixture
def raw_client(backend: VertexBackend) -> Iterator[Any]:
    yield backend.client()


def test_fake_list_filters_like_the_service(
    raw_client: Any, backend: VertexBackend, fake_vertex: FakeVertex, template: PipelineTemplate
) -> None:
    for i in range(3):
        backend.submit(run_request(f"mnist-data-{i}", display_name=f"mnist-{i}"), template)
    fake_vertex.set_state("mnist-data-1", "SUCCEEDED")

    def names(filter_: str, order_by: str = "") -> list[str]:
        pager = raw_client.list_pipeline_jobs(
            request={"parent": PARENT, "filter": filter_, "order_by": order_by}
        )
        return [job.name.rsplit("/", 1)[-1] for job in pager]

    assert names('state="PIPELINE_STATE_SUCCEEDED"') == ["mnist-data-1"]
    assert names('labels.retrain-kind="data" AND NOT display_name="mnist-2"', "create_time") == [
        "mnist-data-0",
        "mnist-data-1",
    ]
    assert names(
        'display_name:"mnist-*" AND (display_name="mnist-0" OR display_name="mnist-2")'
    ) == [
        "mnist-data-2",
        "mnist-data-0",
    ]
    assert names("labels.retrain-key:*") == ["mnist-data-2", "mnist-data-1", "mnist-data-0"]
    assert names("labels.missing:*") == []
    created = fake_vertex.jobs["mnist-data-1"]["createTime"]
    assert names(f'create_time>"{created}"') == ["mnist-data-2"]

    from google.api_core import exceptions as gexc

    with pytest.raises(gexc.BadRequest, match="unsupported field"):
        names('colour="blue"')


def test_fake_steered_over_http_from_another_process(fake_vertex: FakeVertex) -> None:
    def call(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(fake_vertex.endpoint + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    fake_vertex.add_job("job-1", project=PROJECT)
    assert call("POST", "/_fake/inject", {"op": "create", "status": 503, "times": 2}) == {
        "op": "create",
        "times": 2,
    }
    assert call("POST", "/_fake/jobs/job-1:setState", {"state": "SUCCEEDED"})["state"] == (
        "PIPELINE_STATE_SUCCEEDED"
    )
    assert call("GET", "/_fake/jobs")["jobs"]["job-1"]["state"] == "PIPELINE_STATE_SUCCEEDED"
    assert len(fake_vertex.faults) == 1
    call("POST", "/_fake/reset", {})
    assert fake_vertex.jobs == {} and fake_vertex.faults == []


def test_fake_runs_standalone() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.vertex", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        endpoint = process.stdout.readline().strip()
        assert endpoint.startswith("http://127.0.0.1:")
        backend = VertexBackend(PROJECT, REGION, endpoint=endpoint, deadline=DEADLINE)
        template = parse_template(PIPELINE_YAML.read_bytes(), "gs://t/minimal.yaml")
        assert backend.submit(run_request(), template).created is True
        assert backend.get(JOB_ID).state == "PENDING"
    finally:
        process.terminate()
        assert process.wait(timeout=5) == 0
