"""deploy/terraform and its examples against the google and google-beta providers' own schemas
(see provider_schema.py): every resource and data type, argument and nested block exists where it
is written, in the provider the block names, blocks are written as blocks and arguments as
arguments, required arguments are there, and ignore_changes names real paths. A modified copy of
the Terraform shows that each kind of mistake is caught."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import hcl2
import pytest

from tests.deploy import provider_schema

TERRAFORM = provider_schema.REPO / "deploy" / "terraform"
FOLDERS = [TERRAFORM, *sorted(p for p in (TERRAFORM / "examples").iterdir() if p.is_dir())]


@pytest.fixture(scope="module")
def schemas() -> dict[str, dict[str, Any]]:
    return provider_schema.load_all()


@pytest.mark.parametrize("provider", sorted(provider_schema.PACKAGES))
def test_the_schema_is_the_pinned_package_of_an_allowed_provider_version(
    schemas: dict[str, dict[str, Any]], provider: str
) -> None:
    schema = schemas[provider]
    package = provider_schema.PACKAGES[provider]
    assert schema["package"] == f"{package}=={provider_schema.pinned_version(provider)}"
    with open(TERRAFORM / "versions.tf", encoding="utf-8") as fh:
        versions = hcl2.load(fh)
    constraint = versions["terraform"][0]["required_providers"][0][provider]["version"]
    bounds = re.findall(r"([<>]=?)\s*([\d.]+)", constraint)
    assert bounds, constraint
    version = tuple(int(p) for p in schema["provider_version"].split("."))
    for op, bound in bounds:
        limit = tuple(int(p) for p in bound.split("."))
        assert {
            ">=": version >= limit,
            ">": version > limit,
            "<": version < limit,
            "<=": version <= limit,
        }[op], f"provider {schema['provider_version']} is outside {constraint}"
    # Every resource type the Terraform uses is in it (a sanity check of the extraction).
    assert {"google_cloudfunctions2_function", "google_firestore_field"} <= set(schema["resource"])
    assert schema["resource"]["google_firestore_field"]["b"]["index_config"][1]["b"]["indexes"]
    assert {"google_logging_metric", "google_monitoring_alert_policy"} <= set(schema["resource"])
    assert {"project", "region"} <= set(schema["provider"]["a"])


def test_only_the_beta_provider_knows_iap_on_cloud_run(schemas: dict[str, dict[str, Any]]) -> None:
    """Why ui.tf needs google-beta: the 6.x google provider has no iap_enabled on the service."""
    service = "google_cloud_run_v2_service"
    assert "iap_enabled" not in schemas["google"]["resource"][service]["a"]
    assert "iap_enabled" in schemas["google-beta"]["resource"][service]["a"]


@pytest.mark.parametrize(
    "folder", FOLDERS, ids=lambda p: p.relative_to(TERRAFORM).as_posix() or "module"
)
def test_the_terraform_matches_the_provider_schema(
    schemas: dict[str, dict[str, Any]], folder: Path
) -> None:
    problems = provider_schema.check_folder(folder, schemas)
    assert not problems, "\n".join(map(str, problems))


MUTATIONS = [
    pytest.param(
        "monitoring.tf",
        '        per_series_aligner   = "ALIGN_DELTA"\n        cross_series_reducer = "REDUCE_SUM"\n        group_by_fields      = ["metric.label.route"]',
        '        per_series_aligner   = "ALIGN_DELTA"\n        cross_series_reducer = "REDUCE_SUM"\n        group_by_field       = ["metric.label.route"]',
        'monitoring.tf: resource "google_monitoring_alert_policy" "windows_overdue" > conditions > '
        "condition_threshold > aggregations: unknown argument group_by_field (did you mean "
        "group_by_fields?)",
        id="monitoring-nested-argument-name",
    ),
    pytest.param(
        "monitoring.tf",
        '      value_type  = "STRING"\n      description = "Route whose champion changed."',
        '      value_typ   = "STRING"\n      description = "Route whose champion changed."',
        'monitoring.tf: resource "google_logging_metric" "champion_changes" > metric_descriptor > '
        "labels: unknown argument value_typ (did you mean value_type?)",
        id="logging-metric-argument-name",
    ),
    pytest.param(
        "monitoring.tf",
        "    condition_matched_log {",
        "    condition_matched_logs {",
        'monitoring.tf: resource "google_monitoring_alert_policy" "failed_runs" > conditions: '
        "unknown argument condition_matched_logs (did you mean condition_matched_log?)",
        id="alert-condition-block-name",
    ),
    pytest.param(
        "monitoring.tf",
        "    notification_rate_limit {",
        "    notification_rate_limits {",
        'monitoring.tf: resource "google_monitoring_alert_policy" "failed_runs" > alert_strategy: '
        "unknown argument notification_rate_limits (did you mean notification_rate_limit?)",
        id="alert-strategy-block-name",
    ),
    pytest.param(
        "ui.tf",
        "  count    = var.enable_ui ? 1 : 0\n  provider = google-beta\n",
        "  count = var.enable_ui ? 1 : 0\n",
        'ui.tf: resource "google_cloud_run_v2_service" "ui": unknown argument iap_enabled',
        id="beta-argument-without-the-beta-provider",
    ),
    pytest.param(
        "pubsub.tf",
        "  ack_deadline_seconds       = var.push_ack_deadline_seconds",
        "  ack_deadline_second        = var.push_ack_deadline_seconds",
        'pubsub.tf: resource "google_pubsub_subscription" "push": unknown argument '
        "ack_deadline_second (did you mean ack_deadline_seconds?)",
        id="wrong-argument-name",
    ),
    pytest.param(
        "windows.tf",
        '      query_scope = "COLLECTION"',
        '      query_scopes = "COLLECTION"',
        'windows.tf: resource "google_firestore_field" "expire_at" > index_config > indexes: '
        "unknown argument query_scopes (did you mean query_scope?)",
        id="wrong-nested-argument-name",
    ),
    pytest.param(
        "windows.tf",
        "  ttl_config {}",
        "  ttl_config = {}",
        'windows.tf: resource "google_firestore_field" "expire_at": ttl_config is a block: '
        "write `ttl_config { ... }`, not `ttl_config = ...`",
        id="block-written-as-attribute",
    ),
    pytest.param(
        "windows.tf",
        "    oidc_token {\n      service_account_email",
        "    oidc_token = {\n      service_account_email",
        'windows.tf: resource "google_cloud_scheduler_job" "flush" > http_target: oidc_token is '
        "a block: write `oidc_token { ... }`, not `oidc_token = ...`",
        id="nested-block-written-as-attribute",
    ),
    pytest.param(
        "main.tf",
        "  labels                      = merge(local.labels, { role = each.key })",
        "  labels {\n    role = each.key\n  }",
        'main.tf: resource "google_storage_bucket" "this": labels is an argument: write '
        "`labels = ...`, not a block",
        id="attribute-written-as-block",
    ),
    pytest.param(
        "windows.tf",
        '  field      = "expire_at"\n',
        "",
        'windows.tf: resource "google_firestore_field" "expire_at": missing required argument '
        "field",
        id="missing-required-argument",
    ),
    pytest.param(
        "main.tf",
        'data "google_project" "this" {\n  project_id = var.project_id',
        'data "google_project" "this" {\n  project = var.project_id',
        'main.tf: data "google_project" "this": unknown argument project (did you mean '
        "project_id?)",
        id="data-source-argument",
    ),
    pytest.param(
        "windows.tf",
        'resource "google_cloud_scheduler_job" "flush"',
        'resource "google_cloud_scheduler_jobs" "flush"',
        'windows.tf: resource "google_cloud_scheduler_jobs" "flush": no such resource type in '
        "the google provider (did you mean google_cloud_scheduler_job?)",
        id="resource-type",
    ),
    pytest.param(
        "functions.tf",
        "    ignore_changes = [build_config[0].source]\n  }\n\n  depends_on = [\n"
        "    google_project_service.apis,\n    google_project_iam_member.function_build,\n"
        "    google_artifact_registry_repository_iam_member.function_build_writer,\n"
        "    google_storage_bucket_iam_member.function_build_source_reader,\n  ]\n}\n\n"
        'resource "google_cloudfunctions2_function" "event"',
        "    ignore_changes = [build_config[0].sources]\n  }\n\n  depends_on = [\n"
        "    google_project_service.apis,\n    google_project_iam_member.function_build,\n"
        "    google_artifact_registry_repository_iam_member.function_build_writer,\n"
        "    google_storage_bucket_iam_member.function_build_source_reader,\n  ]\n}\n\n"
        'resource "google_cloudfunctions2_function" "event"',
        'functions.tf: resource "google_cloudfunctions2_function" "http": ignore_changes names '
        "build_config.sources: no sources (did you mean source?)",
        id="ignore-changes-path",
    ),
    pytest.param(
        "examples/status-page/main.tf",
        'provider "google-beta" {\n  project = var.project_id',
        'provider "google-beta" {\n  projects = var.project_id',
        'main.tf: provider "google-beta": unknown argument projects (did you mean project?)',
        id="example-provider-argument",
    ),
]


@pytest.mark.parametrize(("name", "old", "new", "expected"), MUTATIONS)
def test_a_mistake_in_a_copy_is_caught(
    schemas: dict[str, dict[str, Any]],
    tmp_path: Path,
    name: str,
    old: str,
    new: str,
    expected: str,
) -> None:
    copy = tmp_path / "terraform"
    shutil.copytree(TERRAFORM, copy, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*"))
    text = (copy / name).read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{name} no longer contains {old!r} exactly once"
    (copy / name).write_text(text.replace(old, new), encoding="utf-8")
    folder = (copy / name).parent
    problems = [str(p) for p in provider_schema.check_folder(folder, schemas)]
    assert problems == [expected]
