"""The tiny template, requests and ledger rows shared by the local ledger's tests
(tests/unit/test_ledger.py and tests/integration/test_ledger_processes.py)."""

from __future__ import annotations

from retrain_trigger.model import RunRequest
from retrain_trigger_dev.local.ledger import Ledger

TEMPLATE_YAML = b"""
pipelineInfo:
  name: tiny
root:
  inputDefinitions:
    parameters:
      mode:
        parameterType: STRING
        defaultValue: ok
      sleep:
        parameterType: NUMBER_DOUBLE
        defaultValue: 0.0
"""


def make_request(job_id: str, route: str = "churn", **params) -> RunRequest:
    return RunRequest(
        route=route,
        run_key=f"gs://bucket/data/{job_id}.csv#1",
        job_id=job_id,
        display_name=f"{route}-data",
        template="tiny.yaml",
        pipeline_root="gs://bucket/root",
        parameter_values=params,
        labels={"route": route, "kind": "data"},
    )


def insert(
    ledger: Ledger, job_id: str, *, route: str = "churn", now: float | None = None, **params
):
    return ledger.insert(
        job_id=job_id,
        job_name=f"projects/local/locations/us-central1/pipelineJobs/{job_id}",
        template_raw=TEMPLATE_YAML,
        template_digest="sha256:tiny",
        template_uri="tiny.yaml",
        route=route,
        run_key=f"key-{job_id}",
        parameters=params,
        labels={"route": route},
        now=now,
    )
