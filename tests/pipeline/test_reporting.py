"""pipeline_specs.reporting: the run-outcome exit task and the champion report.

The pipelines here are the smallest that show the mechanism (one step that succeeds or fails on
purpose), compiled to YAML and run by kfp's local SubprocessRunner exactly as the local backend
runs a template; their reports go to the real Pub/Sub emulator and are pulled back from a
subscription. MNIST's own reports are in test_e2e.py.
"""

import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kfp import compiler, dsl

from pipeline_specs import DEFAULT_IMAGE, reporting

from ._programs import load_spec, programs, undefined_globals
from .conftest import OutcomeTopic, run_compiled

RFC3339_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


# A component's annotations are read by KFP, so this module has no `from __future__ import
# annotations`.
def step(fail: bool) -> str:
    if fail:
        raise ValueError("broken on purpose")
    return "done"


@pytest.fixture(scope="module")
def tiny_spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-step pipeline watched by the reporter, compiled as a user would compile theirs."""
    one_step = dsl.component(step, base_image=DEFAULT_IMAGE, install_kfp_package=False)

    @dsl.pipeline(name="tiny")
    def tiny(fail: bool = False, outcome_topic: str = "", job_id: str = ""):
        with reporting.reported_run(outcome_topic, job_id):
            one_step(fail=fail).set_caching_options(False)

    out = tmp_path_factory.mktemp("tiny") / "tiny.yaml"
    compiler.Compiler().compile(tiny, package_path=str(out))
    return out


# --- the messages ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "code", "message", "expected"),
    [
        ("SUCCEEDED", None, None, ("SUCCEEDED", 0, "")),
        (
            "FAILED",
            1.0,
            "Task exit-handler-1 failed.",
            ("FAILED", 1, "Task exit-handler-1 failed."),
        ),
        ("CANCELLED", 1, "cancelled by a user", ("CANCELLED", 1, "cancelled by a user")),
        ("CANCELED", None, "", ("CANCELLED", 0, "")),
        ("PIPELINE_STATE_FAILED", 9, "x", ("FAILED", 9, "x")),
        (
            "RUNNING",
            None,
            "",
            ("FAILED", 0, "final status state 'RUNNING' is not SUCCEEDED, FAILED or CANCELLED"),
        ),
        (None, "n/a", "lost", ("FAILED", 0, "final status state None is not SUCCEEDED, FAILED or")),
    ],
)
def test_run_outcome_report_normalises_the_final_status(
    schema_validator, state: Any, code: Any, message: Any, expected: tuple
) -> None:
    report = reporting.run_outcome_report(
        state,
        "projects/p/locations/r/pipelineJobs/j",
        code,
        message,
        "mnist-data-x-1",
        "exit-handler",
    )
    assert (report["state"], report["error"]["code"]) == expected[:2]
    assert report["error"]["message"].startswith(expected[2])
    assert report["kind"] == reporting.OUTCOME_KIND
    assert report["job"] == "projects/p/locations/r/pipelineJobs/j"
    assert RFC3339_MS.match(report["reported_at"])
    schema_validator("run-outcome").validate(report)


def test_champion_report_first_and_next(schema_validator) -> None:
    validator = schema_validator("champion")
    first = reporting.champion_report(
        "mnist-data-x-1",
        "",
        "gs://b/models/v1/",
        "v1",
        "accuracy",
        0.98,
        "",
        None,
        "abc",
        "",
        "2026-12-02T10:11:12.123Z",
    )
    assert first["previous"] is None
    assert first["kind"] == reporting.CHAMPION_KIND
    validator.validate(first)
    second = reporting.champion_report(
        "mnist-data-x-2",
        "",
        "/reg/v2/",
        "v2",
        "auc",
        0.9,
        "v1",
        0.85,
        "",
        "img@sha256:1",
        "2026-12-02T10:11:12.123Z",
    )
    assert second["previous"] == {"version": "v1", "metric": {"name": "auc", "value": 0.85}}
    validator.validate(second)


@pytest.mark.parametrize(
    ("name", "change", "problem"),
    [
        ("run-outcome", {"state": "DONE"}, "is not one of"),
        ("run-outcome", {"job_id": "Not A Job Id"}, "does not match"),
        ("run-outcome", {"error": {"code": 3, "message": "x"}}, "was expected"),
        ("run-outcome", {"reported_at": "yesterday"}, "does not match"),
        ("run-outcome", {"extra": 1}, "Additional properties"),
        ("champion", {"model_uri": "gs://b/models/v1"}, "does not match"),
        ("champion", {"previous": {"version": "v0"}}, "is not valid under any"),
        ("champion", {"metric": {"name": "accuracy", "value": "0.9"}}, "is not of type 'number'"),
    ],
)
def test_schemas_refuse_malformed_messages(
    schema_validator, name: str, change: dict, problem: str
) -> None:
    from jsonschema import ValidationError

    good = {
        "run-outcome": reporting.run_outcome_report(
            "SUCCEEDED", "", None, None, "a-1", "reconcile"
        ),
        "champion": reporting.champion_report(
            "a-1",
            "",
            "gs://b/models/v1/",
            "v1",
            "accuracy",
            0.9,
            "",
            None,
            "",
            "",
            "2026-12-02T10:11:12Z",
        ),
    }[name]
    schema_validator(name).validate(good)
    with pytest.raises(ValidationError, match=problem):
        schema_validator(name).validate({**good, **change})


# --- publishing never fails ---------------------------------------------------------------------


def test_no_topic_logs_the_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert reporting.publish_report("", {"job_id": "a-1"}, "run-outcome") is False
    assert "run-outcome report (no outcome_topic: not published)" in capsys.readouterr().out


def test_a_malformed_topic_is_logged_not_raised(capsys: pytest.CaptureFixture[str]) -> None:
    assert reporting.publish_report("my-topic", {"job_id": "a-1"}, "champion") is False
    out = capsys.readouterr().out
    assert '"severity": "WARNING"' in out
    assert (
        "champion report not published (ValueError: outcome_topic must be a full topic path" in out
    )


def test_an_unreachable_pubsub_gives_up_after_the_deadline(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{closed.getsockname()[1]}")
        published = reporting.publish_report(
            "projects/p/topics/outcomes", {"job_id": "a-1"}, "run-outcome", deadline=1.0
        )
    assert published is False
    assert "run-outcome report not published (" in capsys.readouterr().out


def test_the_reporter_program_is_complete(tiny_spec: Path) -> None:
    found = programs(load_spec(tiny_spec))
    assert set(found) == {"exec-report-run-outcome", "exec-step"}
    assert undefined_globals(found["exec-report-run-outcome"]) == set()


def test_reporter_installs_nothing_unless_asked() -> None:
    assert (
        reporting.reporter().component_spec.implementation.container.command[2].count("pip install")
        == 0
    )
    installing = reporting.reporter("python:3.12-slim", install=True)
    script = " ".join(installing.component_spec.implementation.container.command)
    assert reporting.PUBSUB_REQUIREMENT in script
    assert "kfp==" in script


# --- through the exit handler, to the emulator and back -----------------------------------------


def _only(messages: list, kind: str) -> list:
    return [m for m in messages if m.attributes.get("retrain-message") == kind]


@pytest.mark.emulator
@pytest.mark.slow
def test_a_succeeding_run_reports_succeeded(
    tiny_spec: Path, tmp_path: Path, outcome_topic: OutcomeTopic, job_id: str, schema_validator
) -> None:
    outputs = run_compiled(tiny_spec, tmp_path, outcome_topic=outcome_topic.path, job_id=job_id)
    assert outputs == {"Output": "done"}
    (message,) = outcome_topic.messages()
    assert message.attributes == {reporting.MESSAGE_ATTRIBUTE: "run-outcome"}
    report = message.data
    schema_validator("run-outcome").validate(report)
    assert report["state"] == "SUCCEEDED"
    assert report["job_id"] == job_id
    assert report["error"] == {"code": 0, "message": ""}
    assert report["reporter"] == "exit-handler"
    # kfp.local's final status names its own stand-in for the job (Vertex: the job's resource
    # name); job_id is what matches a report to its run everywhere.
    assert report["job"] == "local-pipeline-exit-handler-1"


@pytest.mark.emulator
@pytest.mark.slow
def test_a_failing_run_reports_failed_with_the_error(
    tiny_spec: Path,
    tmp_path: Path,
    outcome_topic: OutcomeTopic,
    job_id: str,
    schema_validator,
    capfd: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(RuntimeError, match=r"Inner task failed: .*step"):
        run_compiled(
            tiny_spec, tmp_path, fail=True, outcome_topic=outcome_topic.path, job_id=job_id
        )
    assert "ValueError: broken on purpose" in capfd.readouterr().out
    (message,) = outcome_topic.messages()
    report = message.data
    schema_validator("run-outcome").validate(report)
    assert report["state"] == "FAILED"
    assert report["job_id"] == job_id
    # The final status' error, as the runner gives it: kfp.local names the failed DAG (on Vertex
    # AI the message lists the failed tasks).
    assert report["error"] == {"code": 1, "message": "Task exit-handler-1 failed."}


@pytest.mark.emulator
@pytest.mark.slow
@pytest.mark.parametrize("fail", [False, True])
def test_a_report_that_cannot_be_published_does_not_change_the_run(
    tiny_spec: Path,
    tmp_path: Path,
    outcome_topic: OutcomeTopic,
    job_id: str,
    fail: bool,
    capfd: pytest.CaptureFixture[str],
) -> None:
    missing = outcome_topic.path + "-missing"
    run: Callable[[], dict] = lambda: run_compiled(  # noqa: E731
        tiny_spec, tmp_path, fail=fail, outcome_topic=missing, job_id=job_id
    )
    if fail:
        with pytest.raises(RuntimeError, match=r"Inner task failed: .*step"):
            run()
    else:
        assert run() == {"Output": "done"}
    out = capfd.readouterr().out
    assert "run-outcome report not published (NotFound: 404 Topic not found)" in out
    assert "Task \x1b[96m'report-run-outcome'\x1b[0m finished with status \x1b[92mSUCCESS" in out
    assert outcome_topic.messages() == []
