"""deploy/terraform: a module (no provider block) that parses, declares what it uses, stays private
and least-privileged, and in which checkov finds nothing (every suppression justified in place);
its examples/ call it with inputs it declares."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hcl2
import pytest

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "deploy" / "terraform"
EXAMPLES = sorted(p for p in (TERRAFORM / "examples").iterdir() if p.is_dir())
CHECKOV = Path(os.environ.get("CHECKOV_VENV", REPO / ".venv-checkov")) / "bin" / "checkov"

# Built from parts so that a plain-text search of the repository finds none of them.
ALL_USERS = "all" + "Users"
ALL_AUTHENTICATED_USERS = "all" + "Authenticated" + "Users"
ALLOW_UNAUTHENTICATED = "--" + "allow-" + "unauthenticated"


def _unquote(value: Any) -> Any:
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _load(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return _unquote(hcl2.load(fh))


@pytest.fixture(scope="module")
def files() -> dict[str, dict[str, Any]]:
    found = {p.name: _load(p) for p in sorted(TERRAFORM.glob("*.tf"))}
    assert {"main.tf", "variables.tf", "outputs.tf", "versions.tf", "iam.tf"} <= set(found)
    return found


def _blocks(files: dict[str, dict[str, Any]], kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for parsed in files.values():
        for block in parsed.get(kind, []):
            yield from block.items()


def _resources(
    files: dict[str, dict[str, Any]], rtype: str = ""
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for rt, named in _blocks(files, "resource"):
        if not rtype or rt == rtype:
            for name, body in named.items():
                yield rt, name, body


def _one(files: dict[str, dict[str, Any]], rtype: str, name: str) -> dict[str, Any]:
    found = [body for rt, n, body in _resources(files, rtype) if n == name]
    assert len(found) == 1, f"{rtype}.{name}"
    return found[0]


def _block(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body[name]
    return value[0] if isinstance(value, list) else value


def test_every_variable_has_a_description_and_a_type(files: dict[str, dict[str, Any]]) -> None:
    variables = dict(_blocks(files, "variable"))
    assert {"project_id", "region", "name_prefix", "enable_windows", "event_delivery"} <= set(
        variables
    )
    for name, body in variables.items():
        assert str(body.get("description", "")).strip(), f"variable {name} has no description"
        assert str(body.get("type", "")).strip(), f"variable {name} has no type"


def test_every_variable_used_is_declared_and_every_declared_one_used() -> None:
    declared = set()
    used: set[str] = set()
    for path in TERRAFORM.glob("*.tf"):
        text = path.read_text(encoding="utf-8")
        declared |= set(re.findall(r'^variable\s+"([A-Za-z0-9_-]+)"', text, re.MULTILINE))
        used |= set(re.findall(r"\bvar\.([A-Za-z0-9_]+)", text))
    assert used - declared == set()
    assert declared - used == set()


def test_every_local_and_output_is_defined(files: dict[str, dict[str, Any]]) -> None:
    defined = {
        key for parsed in files.values() for block in parsed.get("locals", []) for key in block
    }
    used = set()
    for path in TERRAFORM.glob("*.tf"):
        used |= set(re.findall(r"\blocal\.([A-Za-z0-9_]+)", path.read_text(encoding="utf-8")))
    assert used - defined == set()
    outputs = dict(_blocks(files, "output"))
    for name, body in outputs.items():
        assert str(body.get("description", "")).strip(), f"output {name} has no description"
    assert {
        "http_function_url",
        "event_function_url",
        "events_topic",
        "dead_letter_topic",
        "dead_letter_subscription",
        "service_accounts",
        "cloudbuild_substitutions",
    } <= set(outputs)


def test_terraform_fmt_is_clean() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("no terraform binary on this machine (the hcl2 checks still ran)")
    result = subprocess.run(
        [terraform, "fmt", "-check", "-diff", "-recursive", str(TERRAFORM)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_buckets_are_private_uniform_and_versioned(files: dict[str, dict[str, Any]]) -> None:
    buckets = list(_resources(files, "google_storage_bucket"))
    assert len(buckets) >= 2
    for _, name, body in buckets:
        assert body["uniform_bucket_level_access"] is True, name
        assert body["public_access_prevention"] == "enforced", name
        assert _block(body, "versioning")["enabled"] is True, name


def test_object_finalize_notifications_reach_the_event_function_with_oidc(
    files: dict[str, dict[str, Any]],
) -> None:
    notification = _one(files, "google_storage_notification", "data")
    assert notification["event_types"] == ["OBJECT_FINALIZE"]
    assert notification["payload_format"] == "JSON_API_V1"
    # One notification per prefix: "" (the whole bucket) is sent as no prefix at all.
    assert "toset(var.data_prefixes)" in notification["for_each"]
    assert notification["object_name_prefix"] == '${each.value != "" ? each.value : null}'
    assert "gcs_publisher" in json.dumps(notification["depends_on"])
    publisher = _one(files, "google_pubsub_topic_iam_member", "gcs_publisher")
    assert publisher["role"] == "roles/pubsub.publisher" and "gcs_agent" in publisher["member"]

    push = _one(files, "google_pubsub_subscription", "push")
    config = _block(push, "push_config")
    assert "google_cloudfunctions2_function.event" in config["push_endpoint"]
    oidc = _block(config, "oidc_token")
    assert 'google_service_account.this["push"].email' in oidc["service_account_email"]
    assert oidc["audience"] == config["push_endpoint"]
    dead_letter = _block(push, "dead_letter_policy")
    assert "google_pubsub_topic.dead_letter" in dead_letter["dead_letter_topic"]
    assert "max_delivery_attempts" in dead_letter
    assert {"minimum_backoff", "maximum_backoff"} <= set(_block(push, "retry_policy"))
    assert push["retain_acked_messages"] is True

    pull = _one(files, "google_pubsub_subscription", "dead_letter")
    assert "push_config" not in pull
    assert pull["message_retention_duration"] == "604800s"
    assert _block(pull, "expiration_policy")["ttl"] == ""


def test_pubsub_service_agent_grants(files: dict[str, dict[str, Any]]) -> None:
    token = _one(files, "google_service_account_iam_member", "pubsub_token_creator")
    assert token["role"] == "roles/iam.serviceAccountTokenCreator"
    assert token["member"] == "${local.pubsub_agent}"
    assert _one(files, "google_pubsub_topic_iam_member", "dead_letter_publisher")["role"] == (
        "roles/pubsub.publisher"
    )
    assert (
        _one(files, "google_pubsub_subscription_iam_member", "dead_letter_source_subscriber")[
            "role"
        ]
        == "roles/pubsub.subscriber"
    )


@pytest.mark.parametrize(
    ("name", "entry_point"), [("http", "retrain_http"), ("event", "retrain_event")]
)
def test_functions(files: dict[str, dict[str, Any]], name: str, entry_point: str) -> None:
    function = _one(files, "google_cloudfunctions2_function", name)
    build = _block(function, "build_config")
    assert build["runtime"] == "python312"
    assert build["entry_point"] == entry_point
    storage = _block(_block(build, "source"), "storage_source")
    assert "google_storage_bucket_object.function_source" in storage["object"]
    service = _block(function, "service_config")
    assert f'google_service_account.this["{name}"].email' in service["service_account_email"]
    assert "event_trigger" not in function
    objects = _one(files, "google_storage_bucket_object", "function_source")
    assert "basename(each.value)" in objects["name"]


def test_only_cloud_build_scheduler_and_named_callers_invoke_the_http_function(
    files: dict[str, dict[str, Any]],
) -> None:
    invokers = [
        body
        for rt, _, body in _resources(files)
        if rt.startswith("google_cloud_run") and body.get("role") == "roles/run.invoker"
    ]
    http = [b for b in invokers if b["name"] == "${local.cloud_run_services.http}"]
    event = [b for b in invokers if b["name"] == "${local.cloud_run_services.event}"]
    assert sorted(b["member"] for b in http) == sorted(
        [
            "${local.build_member}",
            "${each.value}",  # extra_http_invokers, empty by default
            "serviceAccount:${google_service_account.scheduler[0].email}",
        ]
    )
    assert sorted(b["member"] for b in event) == sorted(
        ["${local.push_member}", "serviceAccount:${google_service_account.eventarc[0].email}"]
    )
    assert not [
        b for rt, _, b in _resources(files, "google_project_iam_member") if "run." in b["role"]
    ]
    # The status page: the named invokers, and IAP's service agent when IAP is on.
    ui = [b for b in invokers if b["name"] == "${google_cloud_run_v2_service.ui[0].name}"]
    assert sorted(b["member"] for b in ui) == ["${each.value}", "${local.iap_agent}"]
    assert _one(files, "google_cloud_run_v2_service_iam_member", "ui_invoker")["for_each"] == (
        "${var.enable_ui ? toset(var.ui_invokers) : toset([])}"
    )


def test_least_privilege(files: dict[str, dict[str, Any]]) -> None:
    project_roles = {
        (b["role"], b["member"]) for _, _, b in _resources(files, "google_project_iam_member")
    }
    for role, _ in project_roles:
        assert role not in ("roles/owner", "roles/editor", "roles/viewer")
        assert role not in ("roles/iam.serviceAccountUser", "roles/iam.serviceAccountTokenCreator")
        assert not role.startswith("roles/storage."), "bucket access is granted per bucket"
    assert ("roles/aiplatform.user", "${each.value}") in project_roles
    submitter = _one(files, "google_project_iam_member", "submitter_vertex")
    assert submitter["for_each"] == "${local.submitters}"
    # actAs only on the pipeline account, granted on that account.
    acts_as = _one(files, "google_service_account_iam_member", "submitter_acts_as_pipeline")
    assert acts_as["role"] == "roles/iam.serviceAccountUser"
    assert acts_as["service_account_id"] == '${google_service_account.this["pipeline"].name}'
    # The pipeline account: Vertex AI User (Google lists it for a pipeline's account), the data
    # bucket (read) and the artifacts bucket (objects), nothing more.
    pipeline = [
        (rt, b) for rt, _, b in _resources(files) if b.get("member") == "${local.pipeline_member}"
    ]
    assert sorted((rt, b["role"]) for rt, b in pipeline) == [
        ("google_project_iam_member", "${each.value}"),  # pipeline_service_account_extra_roles
        ("google_project_iam_member", "roles/aiplatform.user"),
        ("google_pubsub_topic_iam_member", "roles/pubsub.publisher"),  # run outcomes
        ("google_storage_bucket_iam_member", "roles/storage.objectUser"),
        ("google_storage_bucket_iam_member", "roles/storage.objectViewer"),
    ]
    publisher = _one(files, "google_pubsub_topic_iam_member", "pipeline_outcome_publisher")
    assert publisher["topic"] == "${google_pubsub_topic.outcomes.name}"
    extra = dict(_blocks(files, "variable"))["pipeline_service_account_extra_roles"]
    assert extra["default"] == []


def test_nothing_is_public() -> None:
    for path in (REPO / "deploy").rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            for forbidden in (ALL_USERS, ALL_AUTHENTICATED_USERS, ALLOW_UNAUTHENTICATED):
                assert forbidden not in text, f"{path.relative_to(REPO)} mentions {forbidden}"


def test_optional_parts_are_off_by_default(files: dict[str, dict[str, Any]]) -> None:
    variables = dict(_blocks(files, "variable"))
    assert variables["enable_windows"]["default"] is False
    assert variables["event_delivery"]["default"] == "pubsub_push"
    assert _one(files, "google_eventarc_trigger", "gcs_finalized")["count"] == (
        "${local.eventarc_delivery ? 1 : 0}"
    )
    trigger = _one(files, "google_eventarc_trigger", "gcs_finalized")
    criteria = {c["attribute"]: c["value"] for c in trigger["matching_criteria"]}
    assert criteria["type"] == "google.cloud.storage.object.v1.finalized"
    for rtype, name in [
        ("google_firestore_database", "windows"),
        ("google_cloud_scheduler_job", "flush"),
    ]:
        assert _one(files, rtype, name)["count"] == "${var.enable_windows ? 1 : 0}"
    job = _one(files, "google_cloud_scheduler_job", "flush")
    target = _block(job, "http_target")
    assert target["uri"].endswith("/flush") and "oidc_token" in target
    assert job["schedule"] == "${var.flush_schedule}"
    assert variables["flush_schedule"]["default"] == "* * * * *"


def _checkov_suppressions() -> list[tuple[str, str, str]]:
    found = []
    for path in sorted(TERRAFORM.glob("*.tf")):
        for line in path.read_text(encoding="utf-8").splitlines():
            match = re.search(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?", line)
            if match:
                found.append((path.name, match.group(1), (match.group(2) or "").strip()))
    return found


def test_every_checkov_suppression_is_justified() -> None:
    for name, check, reason in _checkov_suppressions():
        assert check.startswith("CKV"), (name, check)
        assert len(reason) >= 30, f"{name}: {check} is suppressed without a reason"


@pytest.mark.parametrize(
    "folder", [TERRAFORM, *EXAMPLES], ids=lambda p: p.relative_to(TERRAFORM).as_posix() or "module"
)
def test_checkov_finds_nothing(folder: Path) -> None:
    """The module on its own, and as each example calls it (checkov evaluates a module through its
    caller's inputs, and a folder holding several callers through one of them only)."""
    if not CHECKOV.exists():
        pytest.skip(
            f"checkov is not installed at {CHECKOV} (make setup creates it; CI installs it)"
        )
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    command = [str(CHECKOV), "-d", str(folder), "--compact", "--skip-download", "-o", "json"]
    if folder == TERRAFORM:
        command += ["--skip-path", "examples"]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=env, check=False
    )
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    summary = report["summary"]
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']})"
        for c in report["results"]["failed_checks"]
    ]
    assert summary["failed"] == 0, "\n".join(failed)
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 50
    assert summary["skipped"] == len(_checkov_suppressions())
    if folder != TERRAFORM:  # the module's resources were evaluated through this example
        callers = {c.get("caller_file_path") for c in report["results"]["passed_checks"]}
        assert callers == {f"/{folder.name}/main.tf"} or callers == {"/main.tf"}, callers


# --- a module, and its examples ---------------------------------------------------------------------


def test_the_module_configures_no_provider() -> None:
    """A module with provider blocks cannot be used with count/for_each or another configuration
    of the provider: the caller configures them (examples/)."""
    for path in TERRAFORM.glob("*.tf"):
        parsed = _load(path)
        assert "provider" not in parsed, f"{path.name} has a provider block"
    versions = _load(TERRAFORM / "versions.tf")["terraform"][0]["required_providers"][0]
    assert set(versions) == {"google", "google-beta"}
    assert versions["google"]["version"] == versions["google-beta"]["version"]


def _module_variables() -> dict[str, dict[str, Any]]:
    return dict(_blocks({"variables.tf": _load(TERRAFORM / "variables.tf")}, "variable"))


def _module_outputs() -> set[str]:
    return set(dict(_blocks({"outputs.tf": _load(TERRAFORM / "outputs.tf")}, "output")))


def test_there_are_examples_of_both_kinds() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"minimal", "existing-buckets", "status-page"} <= names
    for folder in EXAMPLES:
        assert list(folder.glob("*.tf")), folder


@pytest.mark.parametrize("folder", EXAMPLES, ids=lambda p: p.name)
def test_each_example_calls_the_module_with_inputs_it_declares(folder: Path) -> None:
    example = {p.name: _load(p) for p in folder.glob("*.tf")}
    providers = [
        label
        for _, parsed in example.items()
        for block in parsed.get("provider", [])
        for label in block
    ]
    assert "google" in providers, f"{folder.name} configures no google provider"
    modules = list(_blocks(example, "module"))
    assert [name for name, _ in modules] == ["retrain"]
    _, call = modules[0]
    assert call["source"] == "../.."
    variables = _module_variables()
    given = {k for k in call if k not in ("source", "version", "providers", "depends_on")}
    assert given - set(variables) == set(), f"{folder.name}: inputs the module does not declare"
    required = {name for name, body in variables.items() if "default" not in body}
    assert required <= given, f"{folder.name}: missing required inputs {required - given}"
    # Every output the example reads exists.
    read = set()
    for path in folder.glob("*.tf"):
        read |= set(re.findall(r"\bmodule\.retrain\.(\w+)", path.read_text(encoding="utf-8")))
    assert read and read <= _module_outputs(), read - _module_outputs()
    # The example's own variables are declared and used, as the module's are.
    declared = {name for name, _ in _blocks(example, "variable")}
    used = set()
    for path in folder.glob("*.tf"):
        used |= set(re.findall(r"\bvar\.([A-Za-z0-9_]+)", path.read_text(encoding="utf-8")))
    assert declared == used


def test_the_examples_cover_existing_buckets_several_prefixes_and_the_status_page() -> None:
    calls = {}
    for folder in EXAMPLES:
        example = {p.name: _load(p) for p in folder.glob("*.tf")}
        calls[folder.name] = dict(_blocks(example, "module"))["retrain"]
    existing = calls["existing-buckets"]
    assert existing["create_data_bucket"] is False and existing["data_bucket"]
    assert len(existing["data_prefixes"]) >= 2
    assert (
        existing["pipeline_compile_module"]
        != _module_variables()["pipeline_compile_module"]["default"]
    )
    page = calls["status-page"]
    assert page["enable_ui"] is True and page["enable_ui_iap"] is True
    assert set(calls["minimal"]) == {
        "source",
        "project_id",
        "function_http_zip",
        "function_gcs_zip",
    }


# --- buckets: created, or existing ones referenced ----------------------------------------------


def test_existing_buckets_are_looked_up_never_created_or_changed(
    files: dict[str, dict[str, Any]],
) -> None:
    created = _one(files, "google_storage_bucket", "this")
    assert created["for_each"] == "${local.created_buckets}"
    [existing] = [
        b
        for rt, named in _blocks(files, "data")
        if rt == "google_storage_bucket"
        for b in named.values()
    ]
    assert existing["for_each"] == "${local.existing_buckets}"
    [precondition] = existing["lifecycle"][0]["precondition"]
    assert precondition["condition"] == '${each.value != ""}'
    variables = _module_variables()
    for role in ("data", "artifacts", "templates", "source"):
        assert variables[f"create_{role}_bucket"]["default"] is True
    # Everything else names buckets through local.buckets, which waits for either kind.
    for path in TERRAFORM.glob("*.tf"):
        if path.name != "main.tf":
            text = path.read_text(encoding="utf-8")
            assert "google_storage_bucket.this" not in text, path.name
            assert "data.google_storage_bucket" not in text, path.name


def _validation(variable: str) -> list[str]:
    return [v["condition"] for v in _module_variables()[variable]["validation"]]


def _regex_of(condition: str) -> str:
    match = re.search(r'regex\("((?:[^"\\]|\\.)*)"', condition)
    assert match, condition
    return match.group(1).encode().decode("unicode_escape")


def test_data_prefixes_may_not_overlap() -> None:
    """The overlap rule of variables.tf, evaluated as Terraform does: startswith(a, b)."""
    [count, overlap] = _validation("data_prefixes")
    assert "startswith(a, b)" in overlap and "distinct(var.data_prefixes)" in count

    def accepted(prefixes: list[str]) -> bool:
        return (
            1 <= len(prefixes) <= 100
            and len(set(prefixes)) == len(prefixes)
            and all(a == b or not a.startswith(b) for a in prefixes for b in prefixes)
        )

    assert accepted(["data/"]) and accepted(["incoming/", "exports/daily/"]) and accepted([""])
    assert not accepted(["data/", "data/2026/"])  # the second is inside the first
    assert not accepted(["", "data/"])  # "" is the whole bucket
    assert not accepted([]) and not accepted(["a/", "a/"])


@pytest.mark.parametrize(
    ("variable", "good", "bad"),
    [
        (
            "pipeline_compile_module",
            ["pipeline_specs.compile", "training.compile", "c"],
            ["x; rm -rf /", "a..b", ".a", "a-b"],
        ),
        (
            "pipeline_template_name",
            ["mnist_training.yaml", "churn.yml"],
            ["a/b.yaml", "x.json", "$(id).yaml"],
        ),
        ("pipeline_template_dir", ["pipeline_specs", "training/compiled"], ["/abs", "a//b", "a b"]),
        ("training_image_name", ["mnist-training", "team/trainer"], ["Upper", "a b", "-x"]),
        (
            "ui_invokers",
            ["user:a@example.com", "group:g@example.com", "domain:example.com"],
            [ALL_USERS, ALL_AUTHENTICATED_USERS, "a@example.com"],
        ),
        ("ui_iap_members", ["group:g@example.com"], [ALL_USERS, ALL_AUTHENTICATED_USERS]),
    ],
)
def test_variable_validations_accept_and_refuse(
    variable: str, good: list[str], bad: list[str]
) -> None:
    [condition] = [c for c in _validation(variable) if "regex(" in c]
    pattern = re.compile(_regex_of(condition))
    for value in good:
        assert pattern.search(value), (variable, value)
    for value in bad:
        assert not pattern.search(value), (variable, value)


# --- run outcomes and notifications ---------------------------------------------------------------


def test_run_outcomes_are_pushed_to_the_event_function_at_the_topic_path(
    files: dict[str, dict[str, Any]],
) -> None:
    locals_ = {
        k: v for parsed in files.values() for b in parsed.get("locals", []) for k, v in b.items()
    }
    uri = "google_cloudfunctions2_function.event.service_config[0].uri"
    assert locals_["outcome_push_endpoint"] == (
        f"${{{uri}}}/projects/${{var.project_id}}/topics/${{local.outcome_topic_name}}"
    )
    push = _one(files, "google_pubsub_subscription", "outcomes_push")
    assert push["topic"] == "${google_pubsub_topic.outcomes.id}"
    config = _block(push, "push_config")
    assert config["push_endpoint"] == "${local.outcome_push_endpoint}"
    oidc = _block(config, "oidc_token")
    # The service URL, not the endpoint: Cloud Run accepts its URL as audience.
    assert oidc["audience"] == f"${{{uri}}}"
    assert 'google_service_account.this["push"].email' in oidc["service_account_email"]
    dead_letter = _block(push, "dead_letter_policy")
    assert dead_letter["dead_letter_topic"] == "${google_pubsub_topic.outcomes_dead_letter.id}"
    assert push["retain_acked_messages"] is True
    pull = _one(files, "google_pubsub_subscription", "outcomes_dead_letter")
    assert "push_config" not in pull and pull["message_retention_duration"] == "604800s"
    # The event function is told which topic is the outcome topic, and where to notify.
    assert locals_["event_function_env"] == {
        "RETRAIN_OUTCOME_TOPIC": "${google_pubsub_topic.outcomes.id}",
        "RETRAIN_NOTIFICATION_TOPIC": "${google_pubsub_topic.notifications.id}",
    }
    event = _block(_one(files, "google_cloudfunctions2_function", "event"), "service_config")
    assert (
        event["environment_variables"] == "${merge(local.function_env, local.event_function_env)}"
    )
    http = _block(_one(files, "google_cloudfunctions2_function", "http"), "service_config")
    assert "event_function_env" not in json.dumps(http)
    for name in ("outcome_topic_name", "notification_topic_name"):
        assert _module_variables()[name]["default"] == ""


# --- the status page --------------------------------------------------------------------------------


def test_the_status_page_is_optional_private_and_read_only(
    files: dict[str, dict[str, Any]],
) -> None:
    variables = _module_variables()
    assert variables["enable_ui"]["default"] is False
    assert variables["enable_ui_iap"]["default"] is False
    assert variables["ui_invokers"]["default"] == []
    service = _one(files, "google_cloud_run_v2_service", "ui")
    assert service["count"] == "${var.enable_ui ? 1 : 0}"
    assert service["provider"] == "google-beta"
    assert service["invoker_iam_disabled"] is False
    assert service["iap_enabled"] == "${local.ui_iap}"
    template = _block(service, "template")
    assert template["service_account"] == "${google_service_account.ui[0].email}"
    container = _block(template, "containers")
    assert container["command"] == ["retrain-trigger"]
    assert container["args"] == ["ui", "--host", "0.0.0.0", "--port", "${tostring(local.ui_port)}"]
    assert _block(container, "ports")["container_port"] == "${local.ui_port}"
    # Read-only: the status page's account holds two viewer roles and nothing else.
    grants = [
        (rt, b["role"]) for rt, _, b in _resources(files) if b.get("member") == "${local.ui_member}"
    ]
    assert sorted(grants) == [
        ("google_project_iam_member", "roles/aiplatform.viewer"),
        ("google_project_iam_member", "roles/datastore.viewer"),
    ]
    firestore = _one(files, "google_project_iam_member", "ui_firestore_viewer")
    assert "databases/${var.firestore_database}" in firestore["condition"][0]["expression"]
    accessor = _one(files, "google_iap_web_cloud_run_service_iam_member", "ui_accessor")
    assert accessor["role"] == "roles/iap.httpsResourceAccessor"
    assert accessor["for_each"] == "${local.ui_iap ? toset(var.ui_iap_members) : toset([])}"
