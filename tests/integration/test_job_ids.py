"""Pipeline job ids as Vertex AI accepts them: a lowercase letter, then up to 127 of a-z, 0-9, '-'
(https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.pipelineJobs/create).
The fake Vertex server, the Vertex backend and the local backend all hold to the same rule."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from retrain_trigger.backends.vertex import VertexBackend
from retrain_trigger.errors import BackendRefused
from retrain_trigger.model import RunRequest
from retrain_trigger.spec import PipelineTemplate, parse_template
from retrain_trigger_dev.local.backend import LocalBackend
from tests.fakes.vertex import FakeVertex

REPO = Path(__file__).resolve().parents[2]
PIPELINE_YAML = REPO / "tests" / "fakes" / "minimal_pipeline.yaml"
PARENT = "projects/test-project/locations/us-central1"

VALID = ["a", "mnist-data-0001-3f2a", "a" + "-" * 127, "z9", "a-"]
INVALID = ["1abc", "0", "9-mnist-data", "-abc", "Abc", "a_b", "a" * 129, ""]


@pytest.fixture(scope="module")
def template() -> PipelineTemplate:
    return parse_template(PIPELINE_YAML.read_bytes(), "gs://ct-templates/minimal/v1.yaml")


def _request(job_id: str) -> RunRequest:
    return RunRequest(
        route="mnist",
        run_key="gs://ct-bucket/data/part-0001.csv#1",
        job_id=job_id,
        display_name="mnist-data",
        template="gs://ct-templates/minimal/v1.yaml",
        pipeline_root="gs://ct-bucket/pipeline-root",
        parameter_values={"data_uri": "gs://ct-bucket/data/part-0001.csv", "epochs": 5},
        labels={"retrain-route": "mnist"},
    )


def _create(fake: FakeVertex, job_id: str) -> tuple[int, dict[str, Any]]:
    body = {
        "displayName": "x",
        "pipelineSpec": json.loads(json.dumps(_spec())),
        "runtimeConfig": {"gcsOutputDirectory": "gs://b/root", "parameterValues": {}},
    }
    request = urllib.request.Request(
        f"{fake.endpoint}/v1/{PARENT}/pipelineJobs?pipelineJobId={job_id}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _spec() -> dict[str, Any]:
    import yaml

    spec = yaml.safe_load(PIPELINE_YAML.read_text())
    # Parameters with defaults only matter for values sent; none are sent here.
    for definition in spec["root"].get("inputDefinitions", {}).get("parameters", {}).values():
        definition["isOptional"] = True
    return spec


@pytest.mark.parametrize("job_id", ["1abc", "0", "9-mnist-data", "-abc"])
def test_the_fake_refuses_an_id_vertex_refuses(fake_vertex: FakeVertex, job_id: str) -> None:
    status, answer = _create(fake_vertex, job_id)
    assert status == 400, answer
    assert answer["error"]["status"] == "INVALID_ARGUMENT"
    assert answer["error"]["message"] == (
        f'Invalid PipelineJob ID "{job_id}". The ID must match the regular expression '
        "[a-z][-a-z0-9]{0,127}."
    )
    assert fake_vertex.jobs == {}


@pytest.mark.parametrize("job_id", ["a", "z9", "mnist-data-0001-3f2a"])
def test_the_fake_accepts_an_id_vertex_accepts(fake_vertex: FakeVertex, job_id: str) -> None:
    status, answer = _create(fake_vertex, job_id)
    assert status == 200, answer
    assert job_id in fake_vertex.jobs


@pytest.mark.parametrize("job_id", INVALID)
def test_the_vertex_backend_refuses_before_any_request(
    fake_vertex: FakeVertex, template: PipelineTemplate, job_id: str
) -> None:
    backend = VertexBackend("test-project", "us-central1", endpoint=fake_vertex.endpoint)
    with pytest.raises(BackendRefused, match=r"is not valid for Vertex AI \(\[a-z\]\[-a-z0-9\]"):
        backend.submit(_request(job_id), template)
    assert fake_vertex.requests == []


@pytest.mark.parametrize("job_id", VALID)
def test_the_vertex_backend_submits_a_valid_id(
    fake_vertex: FakeVertex, template: PipelineTemplate, job_id: str
) -> None:
    backend = VertexBackend("test-project", "us-central1", endpoint=fake_vertex.endpoint)
    handle = backend.submit(_request(job_id), template)
    assert handle.created and handle.job_id == job_id


@pytest.mark.parametrize("job_id", INVALID)
def test_the_local_backend_refuses_the_same_ids(
    tmp_path: Path, template: PipelineTemplate, job_id: str
) -> None:
    backend = LocalBackend(tmp_path / "state", start_worker=False)
    try:
        with pytest.raises(BackendRefused, match=r"starting with a letter$"):
            backend.submit(_request(job_id), template)
    finally:
        backend.close()
