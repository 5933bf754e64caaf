"""Bringing a pipeline of one's own: ``init`` from a compiled pipeline, what the local stack derives
from a configuration, ``windows``/``queue``/``pause``/``resume``, the ``batched`` outcome, and the
command line's exit codes and human output."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from retrain_trigger.config import load_config, parse_config
from retrain_trigger.model import Kind, Outcome, Trigger
from retrain_trigger_dev import cli
from retrain_trigger_dev.localstack.stack import common_prefix, topology
from retrain_trigger_dev.scaffold import scaffold

REPO = Path(__file__).resolve().parents[2]
CHURN = REPO / "examples" / "churn" / "churn_training.yaml"
MNIST = REPO / "pipeline_specs" / "mnist_training.yaml"


# --------------------------------------------------------------------------- init


def test_init_lists_every_parameter_and_the_result_passes_check(tmp_path: Path) -> None:
    output = tmp_path / "retrain.yaml"
    text, todo = scaffold(str(CHURN), str(output))
    output.write_text(text)
    assert todo == []
    for name, declared in [
        ("manifest_uri", "string, required; the window's manifest"),
        ("model_registry_uri", "string, required; written by the pipeline"),
        ("max_depth", "integer, default 6: uncomment to change"),
        ("min_auc", "number, default 0.75: uncomment to change"),
    ]:
        [line] = [line for line in text.splitlines() if f" {name}:" in line]
        assert declared in line, line
    assert "mode: window" in text
    assert "#   {manifest_uri}  window mode" in text
    config = load_config(output, env={})
    route = config.routes[0]
    assert route.name == "churn-training"
    assert route.parameters["manifest_uri"] == "{manifest_uri}"
    assert Path(route.template).resolve() == CHURN.resolve() or route.template.endswith(
        "churn_training.yaml"
    )
    from retrain_trigger.service import Service

    Service.from_config(config)  # the parameters fit the pipeline's declarations


def test_init_fills_the_mnist_pipeline_from_its_parameter_names(tmp_path: Path) -> None:
    text, todo = scaffold(str(MNIST), str(tmp_path / "r.yaml"), route="mnist", bucket="my-bucket")
    assert todo == []
    assert '"{data_uri}"' in text and '"{commit_sha}"' in text and '"{image_uri}"' in text
    assert "code: true" in text and "mode: object" in text
    parse_config(text.replace(MNIST.name, str(MNIST)), source="r.yaml", env={})


def test_init_leaves_a_required_parameter_nothing_fills_for_the_user(tmp_path: Path) -> None:
    spec = {
        "pipelineInfo": {"name": "two-steps"},
        "root": {
            "inputDefinitions": {
                "parameters": {
                    "table": {"parameterType": "STRING"},
                    "rounds": {"parameterType": "NUMBER_INTEGER", "defaultValue": 3},
                }
            }
        },
    }
    template = tmp_path / "two.yaml"
    template.write_text(json.dumps(spec))
    output = tmp_path / "retrain.yaml"
    text, todo = scaffold(str(template), str(output))
    assert todo == ["table"]
    assert "# table:" in text and "SET IT" in text
    output.write_text(text)
    from retrain_trigger.errors import ConfigError
    from retrain_trigger.service import Service

    with pytest.raises(ConfigError, match=r"required pipeline parameter\(s\) table not set"):
        Service.from_config(load_config(output, env={}))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty or not a mapping"),
        (b"{{{", "is not valid YAML"),
        (b"a: 1", "is not a compiled KFP pipeline"),
        (b"x" * 100, "is empty or not a mapping"),
    ],
)
def test_init_refuses_what_is_not_a_compiled_pipeline(
    tmp_path: Path, content: bytes, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    template = tmp_path / "bad.yaml"
    template.write_bytes(content)
    output = tmp_path / "out.yaml"
    assert cli.main(["init", "--template", str(template), "--output", str(output)]) == 2
    assert message in capsys.readouterr().err
    assert not output.exists()


def test_init_never_overwrites_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "retrain.yaml"
    output.write_text("mine")
    assert cli.main(["init", "--template", str(CHURN), "--output", str(output)]) == 2
    assert "exists" in capsys.readouterr().err
    assert output.read_text() == "mine"
    assert cli.main(["init", "--template", str(CHURN), "--output", str(output), "--force"]) == 0
    assert "wrote" in capsys.readouterr().out


# --------------------------------------------------------------------------- the stack's topology


def test_the_stack_derives_buckets_and_notification_prefixes_from_the_routes() -> None:
    text = textwrap.dedent(
        f"""\
        backend: local
        routes:
          - name: churn
            template: {CHURN}
            pipeline_root: gs://arts/pipeline-root
            parameters:
              manifest_uri: "{{manifest_uri}}"
              model_registry_uri: gs://registry/models
            data: {{bucket: landing, include: ["incoming/**/*.csv", "incoming/extra/*"], mode: window}}
          - name: other
            template: {CHURN}
            pipeline_root: gs://arts/other
            parameters:
              manifest_uri: "{{manifest_uri}}"
              model_registry_uri: gs://registry/other
            data: {{bucket: second, include: ["drops/2026-*/**"], mode: window}}
        """
    )
    found = topology(parse_config(text, env={}))
    assert found.buckets == ("arts", "landing", "registry", "second")
    assert dict(found.notify) == {"landing": "incoming/", "second": "drops/"}
    assert found.event_filter == ("", "")  # two data buckets: no filter fake-gcs-server can hold


def test_one_data_bucket_is_the_notification_filter() -> None:
    text = textwrap.dedent(
        f"""\
        backend: local
        routes:
          - name: churn
            template: {CHURN}
            pipeline_root: gs://arts/pipeline-root
            parameters: {{manifest_uri: "{{manifest_uri}}", model_registry_uri: gs://arts/m}}
            data: {{bucket: landing, include: ["incoming/**"], mode: window}}
        """
    )
    assert topology(parse_config(text, env={})).event_filter == ("landing", "incoming/")


@pytest.mark.parametrize(
    ("names", "common"),
    [([], ""), (["a/b/"], "a/b/"), (["data/x1/", "data/x2/"], "data/x"), (["a/", "b/"], "")],
)
def test_common_prefix_is_a_string_prefix(names: list[str], common: str) -> None:
    assert common_prefix(names) == common


# --------------------------------------------------------------------------- outcomes and pauses


LOCAL = """\
backend: local
local: {{state_dir: {state}}}
routes:
  - name: churn
    template: {template}
    pipeline_root: {root}
    parameters:
      manifest_uri: "{{manifest_uri}}"
      model_registry_uri: gs://arts/models
    data: {{bucket: landing, include: ["incoming/**"], mode: window}}
  - name: mnist
    template: {mnist}
    pipeline_root: gs://arts/mnist-root
    parameters:
      data_uri: "{{data_uri}}"
      model_registry_uri: gs://arts/mnist-models
      commit_sha: "{{commit_sha}}"
      image_uri: "{{image_uri}}"
    data: {{bucket: landing, include: ["digits/**"]}}
    concurrency: queue_latest
"""


@pytest.fixture
def local_config(tmp_path: Path) -> Path:
    path = tmp_path / "retrain.yaml"
    path.write_text(
        LOCAL.format(state=tmp_path / "state", root=tmp_path / "root", template=CHURN, mnist=MNIST)
    )
    return path


def _object(name: str, generation: str = "1") -> Trigger:
    return Trigger(
        kind=Kind.DATA,
        source="test",
        event_type="google.cloud.storage.object.v1.finalized",
        bucket="landing",
        object=name,
        generation=generation,
        size=10,
    )


def _service(path: Path) -> Any:
    from retrain_trigger.service import Service

    return Service.from_config(
        load_config(path, env={"RETRAIN_LOCAL_WORKER": "false"}), clock=lambda: 1_800_000_000.0
    )


def test_an_object_accepted_into_a_window_is_batched_not_skipped(local_config: Path) -> None:
    service = _service(local_config)
    decision = service.handle(_object("incoming/a.csv"))
    assert decision.outcome is Outcome.BATCHED and decision.ok
    assert "batched into window churn__" in decision.reason
    again = service.handle(_object("incoming/a.csv"))
    assert again.outcome is Outcome.DUPLICATE
    listed = service.store.list_decisions(0.0, outcome="batched")
    assert [d["outcome"] for d in listed] == ["batched"]


def test_a_paused_route_skips_changes_batches_objects_and_its_windows_wait(
    local_config: Path,
) -> None:
    service = _service(local_config)
    service.store.set_pause("mnist", "bad export", "ops", 1_800_000_000.0)
    service.store.set_pause("churn", "bad export", "ops", 1_800_000_000.0)

    skipped = service.handle(_object("digits/a.csv"))
    assert skipped.outcome is Outcome.SKIPPED
    assert skipped.reason == "route paused: bad export (by ops)"
    assert skipped.route == "mnist"

    batched = service.handle(_object("incoming/a.csv"))
    assert batched.outcome is Outcome.BATCHED
    assert batched.reason.endswith(
        "route paused: bad export (by ops); its window closes after the resume"
    )

    assert service.flush(force=True) == []  # a paused route's window stays open
    assert [w.state for w in service.store.list_windows("churn")] == ["OPEN"]
    service.store.clear_pause("churn")
    [closed] = service.flush(force=True)
    assert closed.outcome is Outcome.SUBMITTED and closed.route == "churn"


def test_the_end_of_a_run_of_a_paused_route_leaves_its_queued_run_waiting(
    local_config: Path,
) -> None:
    from retrain_trigger.outcomes import decode_report

    service = _service(local_config)
    first = service.handle(_object("digits/a.csv"))
    assert first.outcome is Outcome.SUBMITTED
    held = service.handle(_object("digits/b.csv"))
    assert held.code == "held"  # queued behind the first (queue_latest)
    service.store.set_pause("mnist", "bad export", "ops", 1_800_000_000.0)

    report = {
        "kind": "retrain-trigger.run-outcome/v1",
        "job_id": first.job_id,
        "job": first.job_name or first.job_id,
        "state": "FAILED",
        "error": {"code": 9, "message": "The failed tasks are: [train]."},
        "reported_at": "2027-01-15T08:00:00Z",
        "reporter": "exit-handler",
    }
    result = service.handle_report(decode_report(json.dumps(report).encode()))
    assert result.started == ()  # paused: the queued run waits for the resume, as at a flush
    queued = service.store.get_pending("mnist")
    assert queued is not None and queued.run_key == held.run_key
    assert service.flush() == []

    service.store.clear_pause("mnist")
    [started] = service.flush()
    assert (started.outcome, started.run_key) == (Outcome.SUBMITTED, held.run_key)
    assert service.store.get_pending("mnist") is None


def test_pause_resume_windows_and_queue_commands(
    local_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--config", str(local_config), "--local-worker", "false"]
    assert cli.main([*base, "pause", "churn", "--reason", "upstream broken"]) == 0
    assert "paused churn: upstream broken" in capsys.readouterr().out
    assert cli.main([*base, "pause", "nope", "--reason", "x"]) == cli.EXIT_NOT_FOUND
    assert "no route 'nope'" in capsys.readouterr().err

    from retrain_trigger.service import get_service

    get_service().handle(_object("incoming/a.csv"))
    assert cli.main([*base, "windows"]) == 0
    out = capsys.readouterr().out
    assert "churn" in out and "OPEN" in out and "1  in" in out
    assert cli.main([*base, "windows", "--json"]) == 0
    [window] = json.loads(capsys.readouterr().out)
    assert (window["route"], window["objects"], window["state"]) == ("churn", 1, "OPEN")

    assert cli.main([*base, "queue", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"route": "mnist", "running": None, "waiting": None}
    ]
    assert cli.main([*base, "resume", "churn"]) == 0
    assert capsys.readouterr().out.strip() == "resumed churn"
    assert cli.main([*base, "resume", "churn"]) == 0
    assert capsys.readouterr().out.strip() == "churn was not paused"


def test_why_an_unknown_object_exits_not_found(
    local_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--config", str(local_config), "--local-worker", "false"]
    assert cli.main([*base, "why", "gs://landing/never.csv"]) == cli.EXIT_NOT_FOUND == 3
    assert "no decision recorded" in capsys.readouterr().out


def test_submit_prints_for_a_reader_by_default_and_json_on_request(
    local_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--config", str(local_config), "--local-worker", "false"]
    args = ["submit", "--gcs-uri", "gs://landing/digits/a.csv", "--generation", "7", "--dry-run"]
    assert cli.main([*base, *args]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("skipped")
    assert "would submit (dry run):" in captured.out
    assert '    parameter      data_uri = "gs://landing/digits/a.csv"' in captured.out
    assert "{" not in captured.err  # no JSON log line mixed in
    assert cli.main([*base, *args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["decision"] == "skipped"


def test_a_duplicate_of_a_failed_run_says_how_to_run_it_again() -> None:
    from retrain_trigger.service import duplicate_reason

    assert "force" in duplicate_reason("FAILED") and "nonce" in duplicate_reason("FAILED")
    assert "force" in duplicate_reason("PIPELINE_STATE_CANCELLED")
    assert duplicate_reason("SUCCEEDED") == "a run with this run key already exists (SUCCEEDED)"
    assert duplicate_reason("") == "a run with this run key already exists"


def test_missing_google_credentials_are_a_readable_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from google.auth import exceptions

    def no_credentials(*_args: Any, **_kwargs: Any) -> Any:
        raise exceptions.DefaultCredentialsError("Your default credentials were not found.")

    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setattr("retrain_trigger_dev.localstack.objects.iter_objects", no_credentials)
    assert cli.main(["replay", "--bucket", "b", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "no Google credentials found" in err and "gcloud auth application-default login" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("dest", "message"), [("b/x", "not a gs://bucket/prefix"), ("gs:///x", "not a gs://bucket")]
)
def test_upload_refuses_a_destination_that_is_not_a_bucket(
    tmp_path: Path, dest: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.csv").write_text("x")
    assert cli.main(["upload", str(tmp_path / "a.csv"), dest]) == 2
    assert message in capsys.readouterr().err


def test_commands_never_run_pipelines_in_a_worker_of_their_own(local_config: Path) -> None:
    # A flush or submit with the local backend leaves no run process behind when it exits.
    session = cli.Session({"RETRAIN_CONFIG": str(local_config)})
    assert session.config().local_worker is False
    chosen = cli.Session({"RETRAIN_CONFIG": str(local_config), "RETRAIN_LOCAL_WORKER": "true"})
    assert chosen.config().local_worker is True  # said explicitly: as asked


@pytest.mark.parametrize(
    "content", ["", "{", "[]", '{"env": []}', '{"env": "x"}', "\x00" * 10, "{" * 5000]
)
def test_a_malformed_stack_file_means_no_running_stack(tmp_path: Path, content: str) -> None:
    from retrain_trigger_dev.localstack.objects import stack_env

    (tmp_path / "stack.json").write_text(content)
    assert stack_env(str(tmp_path)) == {}
    assert stack_env(str(tmp_path / "missing")) == {}


@pytest.mark.parametrize(
    ("data", "headers", "expected"),
    [
        ({"bucket": "b", "name": "incoming/a.csv"}, {}, "gs://b/incoming/a.csv"),
        (
            {"name": "x\x00\x1b[31m.csv"},
            {"source": "//storage.googleapis.com/projects/_/buckets/b"},
            "gs://b/x??[31m.csv",
        ),
        (
            {"size": "nope"},
            {
                "source": "//storage.googleapis.com/projects/_/buckets/b",
                "subject": "objects/y.csv",
            },
            "gs://b/y.csv",
        ),
        ({"name": "n" * 5000}, {}, "gs://b/" + "n" * 290 + "..."),
        ("not a mapping", {}, ""),
    ],
)
def test_a_refused_event_names_its_object_safely(
    data: Any, headers: dict[str, str], expected: str
) -> None:
    from cloudevents.http import CloudEvent

    from retrain_trigger.entrypoints import _event_subject

    attributes = {
        "type": "google.cloud.storage.object.v1.finalized",
        "source": "//storage.googleapis.com/projects/_/buckets/b",
        **headers,
    }
    assert _event_subject(CloudEvent(attributes, data)) == expected


def test_up_takes_the_configuration_from_its_option_or_the_global_flag(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(
        "retrain_trigger_dev.localstack.commands.cmd_up", lambda args: seen.append(args) or 0
    )
    mine = str(tmp_path / "mine.yaml")
    assert cli.main(["up", "--config", mine]) == 0
    assert cli.main(["--config", mine, "up"]) == 0  # the global flag counts too
    monkeypatch.setenv("RETRAIN_CONFIG", str(tmp_path / "exported-by-a-client-shell.yaml"))
    assert cli.main(["up"]) == 0  # a variable left in the shell does not replace the MNIST route
    assert [args.config for args in seen] == [mine, mine, None]
