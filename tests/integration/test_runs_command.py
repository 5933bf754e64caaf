"""``retrain-trigger runs`` with the Vertex backend: the trigger's jobs found by their labels
through the real aiplatform_v1 client and the fake Vertex REST server (its list applies the
AIP-160 filter and pages with page tokens, as the API does)."""

from __future__ import annotations

import argparse
import io
import json
from typing import Any

import pytest

from retrain_trigger_dev.localstack.commands import cmd_runs
from tests.conftest import MNIST_TEMPLATE

CONFIG = f"""
project: p
region: us-central1
backend: vertex
routes:
  - name: mnist
    template: {MNIST_TEMPLATE}
    pipeline_root: gs://b/root
    parameters:
      data_uri: "{{data_uri}}"
      model_registry_uri: gs://b/models
      commit_sha: "{{commit_sha}}"
      image_uri: "{{image_uri}}"
    code: true
"""


@pytest.fixture
def vertex(monkeypatch, write_config, fake_vertex):
    monkeypatch.setenv("RETRAIN_CONFIG", str(write_config(CONFIG)))
    monkeypatch.setenv("RETRAIN_VERTEX_ENDPOINT", fake_vertex.endpoint)
    monkeypatch.setenv("RETRAIN_SUBMIT_DEADLINE", "30")
    for i in range(120):  # more than one page (100)
        fake_vertex.add_job(
            f"mnist-data-{i:03d}",
            createTime=f"2026-12-01T10:{i // 60:02d}:{i % 60:02d}Z",
            labels={"retrain-route": "mnist", "retrain-kind": "data"},
            state="PIPELINE_STATE_FAILED" if i % 10 == 0 else "PIPELINE_STATE_SUCCEEDED",
            error={"code": 9, "message": "task 'train' failed"} if i % 10 == 0 else None,
        )
    fake_vertex.add_job("churn-code-1", labels={"retrain-route": "churn"})
    fake_vertex.add_job("by-hand-1", labels={"team": "x"})
    return fake_vertex


def run(action: str = "list", **options: Any) -> tuple[int, str]:
    values = {"job_id": None, "json": False, "limit": 20, "route": "", "state": ""}
    values.update(options)
    out = io.StringIO()
    status = cmd_runs(argparse.Namespace(action=action, overrides={}, **values), out)
    return status, out.getvalue()


def test_runs_lists_only_the_triggers_jobs_newest_first_across_pages(vertex) -> None:
    status, text = run(json=True, limit=200)
    assert status == 0
    jobs = json.loads(text)
    ids = [j["job_id"] for j in jobs]
    assert "by-hand-1" not in ids and len(ids) == 121
    mnist = [i for i in ids if i.startswith("mnist-")]
    assert mnist[:2] == ["mnist-data-119", "mnist-data-118"]
    assert len(vertex.requests_for("list")) == 2  # two pages, the second by the first's token


def test_runs_filters_by_route_and_state_and_shows_what_runs_report(vertex) -> None:
    status, text = run(route="mnist", state="failed", limit=50)
    assert status == 0
    rows = text.splitlines()
    assert rows[0].split() == ["JOB", "ID", "ROUTE", "KIND", "STATE", "CREATED", "REPORTED"]
    assert len(rows) == 1 + 12
    assert all("FAILED" in r and "task 'train' failed" in r for r in rows[1:])
    assert "churn" not in text


def test_runs_show_reads_one_job(vertex) -> None:
    status, text = run("show", job_id="mnist-data-010")
    assert status == 0 and "FAILED" in text and "task 'train' failed" in text
    assert run("show", job_id="mnist-data-999")[0] == 1
