"""Every IAM grant in deploy/terraform, held against a table of what each account calls at run time.

The table names, for each account, each call (and where the code or the build makes it) and the
role and scope that allow it. The test resolves every ``*_iam_member`` resource of the Terraform
(``for_each``, locals, ``each.key``/``each.value``, resource references) into
(account, role, scope, condition) grants, and fails when a call has no grant, or when an account
holds a grant no call needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2
import pytest

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "deploy" / "terraform"


@dataclass(frozen=True)
class Need:
    account: str
    call: str  # what is called at run time
    where: str  # "path::text": the file and a piece of it that makes (or names) the call
    role: str
    scope: str  # project, bucket:<key>, repo:<resource>, sa:<key>, run:<function>, topic:, ...
    condition: str = ""  # a piece the grant's IAM condition must contain ("" = no condition)


VERTEX = "src/retrain_trigger/backends/vertex.py"
SPEC = "src/retrain_trigger/spec.py"
FIRESTORE = "src/retrain_trigger/store/firestore.py"
CLOUDBUILD = "deploy/cloudbuild.yaml"
FIRESTORE_DB = "databases/<var.firestore_database>"
# Calls whose code is the pipeline's exit task, the event function's notifier and the status page
# are named where the deployment hands them their topic or command (the environment variable, the
# Cloud Run command): the contract those components are built against.
OUTCOMES_TF = "deploy/terraform/outcomes.tf"
UI_TF = "deploy/terraform/ui.tf"


def _submitter(account: str) -> list[Need]:
    """What both functions call when they decide and submit a run."""
    return [
        Need(
            account,
            "aiplatform.pipelineJobs.create/get/list (create_pipeline_job, get_pipeline_job, "
            "list_pipeline_jobs)",
            f"{VERTEX}::client.create_pipeline_job(",
            "roles/aiplatform.user",
            "project",
        ),
        Need(
            account,
            "iam.serviceAccounts.actAs on the pipeline account named in PipelineJob.service_account",
            f"{VERTEX}::service_account=request.service_account",
            "roles/iam.serviceAccountUser",
            "sa:pipeline",
        ),
        Need(
            account,
            "storage.objects.get of gs:// templates",
            f"{SPEC}::def _read_gcs(",
            "roles/storage.objectViewer",
            "bucket:templates",
        ),
        Need(
            account,
            "artifactregistry read of https://<region>-kfp.pkg.dev templates",
            f"{SPEC}::def _read_https(",
            "roles/artifactregistry.reader",
            "repo:templates",
        ),
        Need(
            account,
            "Firestore reads, writes and transactions: windows, items, leases, decisions",
            f"{FIRESTORE}::class FirestoreStore",
            "roles/datastore.user",
            "project",
            FIRESTORE_DB,
        ),
    ]


TABLE: list[Need] = [
    *_submitter("http"),
    Need(
        "http",
        "storage.objects.create (a resumable upload; and delete, to rewrite it after a crash) "
        "of window manifests",
        "src/retrain_trigger/gates/windows.py::gcs.write_stream(",
        "roles/storage.objectUser",
        "bucket:artifacts",
        "objects/pipeline-root/manifests/",
    ),
    *_submitter("event"),
    Need(
        "pipeline",
        "read the training data the run is given (data_uri)",
        "pipeline_specs/mnist/load_data.py::def list_data_objects(data_uri",
        "roles/storage.objectViewer",
        "bucket:data",
    ),
    Need(
        "pipeline",
        "write the pipeline root and models/, read window manifests",
        "pipeline_specs/mnist/register.py::<model_registry_uri>/champion.json",
        "roles/storage.objectUser",
        "bucket:artifacts",
    ),
    Need(
        "pipeline",
        "run as the pipeline job's account: Vertex AI User, as Google lists it "
        "(https://cloud.google.com/vertex-ai/docs/pipelines/configure-project#service-account)",
        f"{VERTEX}::service_account=request.service_account",
        "roles/aiplatform.user",
        "project",
    ),
    Need(
        "pipeline",
        "whatever pipeline steps need beyond that, listed by the operator (default: none)",
        "deploy/terraform/variables.tf::pipeline_service_account_extra_roles",
        "<var.pipeline_service_account_extra_roles>",
        "project",
    ),
    Need(
        "pipeline",
        "the exit task publishes the run's outcome (and a champion change) to the outcome topic",
        "pipeline_specs/reporting.py::future = publisher.publish(",
        "roles/pubsub.publisher",
        "topic:outcomes",
    ),
    Need(
        "event",
        "publish run-ended and champion-changed notifications to RETRAIN_NOTIFICATION_TOPIC",
        "deploy/terraform/functions.tf::RETRAIN_NOTIFICATION_TOPIC = google_pubsub_topic.notifications.id",
        "roles/pubsub.publisher",
        "topic:notifications",
    ),
    Need(
        "push",
        "both push subscriptions' OIDC identity (data events, run outcomes): POST to the event "
        "function",
        f'{OUTCOMES_TF}::service_account_email = google_service_account.this["push"].email',
        "roles/run.invoker",
        "run:event",
    ),
    Need(
        "ui",
        "the status page reads the store: windows, queues, paused routes, decision history",
        f'{UI_TF}::RETRAIN_STORE              = "firestore"',
        "roles/datastore.viewer",
        "project",
        FIRESTORE_DB,
    ),
    Need(
        "ui",
        "the status page reads pipeline jobs (state, parameters, errors) from Vertex AI",
        f'{UI_TF}::RETRAIN_BACKEND            = "vertex"',
        "roles/aiplatform.viewer",
        "project",
    ),
    Need(
        "ui_invokers",
        "people and tools opening the status page with an ID token (gcloud run services proxy)",
        "deploy/terraform/variables.tf::ui_invokers",
        "roles/run.invoker",
        "run:ui",
    ),
    Need(
        "iap-agent",
        "Identity-Aware Proxy calls the status page for the users it let through",
        f"{UI_TF}::iap_enabled          = local.ui_iap",
        "roles/run.invoker",
        "run:ui",
    ),
    Need(
        "ui_iap_members",
        "people signing in to the status page through IAP",
        "deploy/terraform/variables.tf::ui_iap_members",
        "roles/iap.httpsResourceAccessor",
        "iap:run:ui",
    ),
    Need(
        "scheduler",
        "Cloud Scheduler's POST /flush",
        "deploy/terraform/windows.tf::/flush",
        "roles/run.invoker",
        "run:http",
    ),
    Need(
        "eventarc",
        "receive object-finalized events as the trigger's identity",
        "deploy/terraform/eventarc.tf::google.cloud.storage.object.v1.finalized",
        "roles/eventarc.eventReceiver",
        "project",
    ),
    Need(
        "eventarc",
        "deliver them to the event function",
        "deploy/terraform/eventarc.tf::cloud_run_service",
        "roles/run.invoker",
        "run:event",
    ),
    Need(
        "extra_http_invokers",
        "operators' own calls to the HTTP function (default: none)",
        "deploy/terraform/variables.tf::extra_http_invokers",
        "roles/run.invoker",
        "run:http",
    ),
    Need(
        "build",
        "the trigger step's POST to the HTTP function",
        f"{CLOUDBUILD}::X-Serverless-Authorization: Bearer",
        "roles/run.invoker",
        "run:http",
    ),
    Need(
        "build",
        "gcloud functions deploy",
        f"{CLOUDBUILD}::gcloud functions deploy",
        "roles/cloudfunctions.developer",
        "project",
    ),
    Need(
        "build",
        "build logs (logging: CLOUD_LOGGING_ONLY with a user-managed account)",
        f"{CLOUDBUILD}::logging: CLOUD_LOGGING_ONLY",
        "roles/logging.logWriter",
        "project",
    ),
    *[
        Need(
            "build",
            "--no-allow-unauthenticated reads and rewrites the service's invoker policy",
            f"{CLOUDBUILD}::--no-allow-unauthenticated",
            "custom:function_invoker_policy",
            f"run:{function}",
        )
        for function in ("http", "event")
    ],
    *[
        Need(
            "build",
            f"deploy with --service-account / --build-service-account {account}",
            f"{CLOUDBUILD}::--build-service-account",
            "roles/iam.serviceAccountUser",
            f"sa:{account}",
        )
        for account in ("http", "event", "function_build")
    ],
    Need(
        "build",
        "docker push and gcloud artifacts docker images describe of the training image",
        f"{CLOUDBUILD}::docker push",
        "roles/artifactregistry.writer",
        "repo:images",
    ),
    Need(
        "build",
        "upload templates to the KFP repository (the documented alternative store)",
        "docs/deploy.md::-F tags=$COMMIT_SHA,latest",
        "roles/artifactregistry.writer",
        "repo:templates",
    ),
    *[
        Need(
            "build",
            f"gcloud storage cp --no-clobber into the {bucket} bucket ({verb})",
            f"{CLOUDBUILD}::gcloud storage cp --no-clobber",
            role,
            f"bucket:{bucket}",
        )
        for bucket in ("templates", "sources")
        for role, verb in (
            ("roles/storage.objectCreator", "create"),
            ("roles/storage.objectViewer", "the existence check of --no-clobber"),
        )
    ],
    Need(
        "function_build",
        "function build logs",
        "deploy/terraform/functions.tf::service_account   = google_service_account.this",
        "roles/logging.logWriter",
        "project",
    ),
    Need(
        "function_build",
        "read the source Cloud Functions stages in its gcf-v2-* buckets",
        "deploy/terraform/functions.tf::storage_source",
        "roles/storage.objectViewer",
        "project",
        "gcf-v2-sources-",
    ),
    Need(
        "function_build",
        "read the source zip",
        "deploy/terraform/functions.tf::storage_source",
        "roles/storage.objectViewer",
        "bucket:sources",
    ),
    Need(
        "function_build",
        "push the function's container",
        "deploy/terraform/functions.tf::docker_repository",
        "roles/artifactregistry.writer",
        "repo:function_images",
    ),
    Need(
        "pubsub-agent",
        "mint the push subscription's OIDC tokens as the push account",
        "deploy/terraform/pubsub.tf::oidc_token",
        "roles/iam.serviceAccountTokenCreator",
        "sa:push",
    ),
    Need(
        "pubsub-agent",
        "forward undeliverable messages to the dead-letter topic",
        "deploy/terraform/pubsub.tf::dead_letter_policy",
        "roles/pubsub.publisher",
        "topic:dead_letter",
    ),
    Need(
        "pubsub-agent",
        "acknowledge forwarded messages on the push subscription",
        "deploy/terraform/pubsub.tf::dead_letter_policy",
        "roles/pubsub.subscriber",
        "subscription:push",
    ),
    Need(
        "pubsub-agent",
        "forward undeliverable run outcomes to their dead-letter topic",
        f"{OUTCOMES_TF}::dead_letter_policy",
        "roles/pubsub.publisher",
        "topic:outcomes_dead_letter",
    ),
    Need(
        "pubsub-agent",
        "acknowledge forwarded run outcomes on the outcome push subscription",
        f"{OUTCOMES_TF}::dead_letter_policy",
        "roles/pubsub.subscriber",
        "subscription:outcomes_push",
    ),
    Need(
        "gcs-agent",
        "publish the data bucket's notifications",
        "deploy/terraform/pubsub.tf::google_storage_notification",
        "roles/pubsub.publisher",
        "topic:events",
    ),
    Need(
        "gcs-agent",
        "publish to Eventarc's own topics (eventarc delivery)",
        "deploy/terraform/eventarc.tf::google_eventarc_trigger",
        "roles/pubsub.publisher",
        "project",
    ),
    Need(
        "storage-usage-logs",
        "write the buckets' usage logs",
        "deploy/terraform/main.tf::log_bucket",
        "roles/storage.objectCreator",
        "bucket:access_logs",
    ),
]


# --- resolving the Terraform into grants --------------------------------------------------------

IAM_SCOPES = {
    "google_project_iam_member": None,
    "google_storage_bucket_iam_member": "bucket",
    "google_service_account_iam_member": "service_account_id",
    "google_artifact_registry_repository_iam_member": "repository",
    "google_cloud_run_v2_service_iam_member": "name",
    "google_pubsub_topic_iam_member": "topic",
    "google_pubsub_subscription_iam_member": "subscription",
    "google_iap_web_cloud_run_service_iam_member": "cloud_run_service_name",
}

_REFERENCES = [
    (r'google_service_account\.this\["(\w+)"\]\.(?:email|name|id)', "sa:{0}"),
    (r"google_service_account\.(\w+)\[0\]\.(?:email|name|id)", "sa:{0}"),
    (r'google_storage_bucket\.this\["(\w+)"\]\.name', "bucket:{0}"),
    (r"google_storage_bucket\.(\w+)\.name", "bucket:{0}"),
    (r"google_storage_bucket\.(\w+)\[0\]\.name", "bucket:{0}"),
    (r"google_artifact_registry_repository\.(\w+)\.(?:name|location)", "repo:{0}"),
    (r"google_project_iam_custom_role\.(\w+)\.name", "custom:{0}"),
    (r"google_pubsub_topic\.(\w+)\.name", "topic:{0}"),
    (r"google_pubsub_subscription\.(\w+)\[0\]\.name", "subscription:{0}"),
    (r"google_pubsub_subscription\.(\w+)\.name", "subscription:{0}"),
    (r"google_cloudfunctions2_function\.(\w+)\.name", "run:{0}"),
    (r"google_cloud_run_v2_service\.(\w+)\[0\]\.name", "run:{0}"),
    (r"local\.buckets\.(\w+)", "bucket:{0}"),
    (r"data\.google_storage_project_service_account\.gcs\.email_address", "gcs-agent"),
]


class Resolver:
    """Just enough of Terraform's expression language for the IAM resources of deploy/terraform."""

    def __init__(self, locals_: dict[str, Any]) -> None:
        self.locals = locals_

    def value(self, raw: Any, env: dict[str, Any]) -> Any:
        if isinstance(raw, dict):
            return {
                self._key(k): self.value(v, env) for k, v in raw.items() if not k.startswith("__")
            }
        if isinstance(raw, list):
            return [self.value(v, env) for v in raw]
        if not isinstance(raw, str):
            return raw
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            return self.template(raw[1:-1], env)
        if raw.startswith("${") and raw.endswith("}") and raw.count("${") == 1:
            return self.expr(raw[2:-1], env)
        return self.template(raw, env)

    @staticmethod
    def _key(key: str) -> str:
        return key.strip('"')

    def template(self, text: str, env: dict[str, Any]) -> str:
        out, i = [], 0
        while (start := text.find("${", i)) >= 0:
            out.append(text[i:start])
            depth, j = 0, start + 2
            while True:
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    if depth == 0:
                        break
                    depth -= 1
                j += 1
            out.append(str(self.expr(text[start + 2 : j], env)))
            i = j + 1
        out.append(text[i:])
        return "".join(out).replace('\\"', '"')

    def expr(self, expr: str, env: dict[str, Any]) -> Any:
        expr = expr.strip()
        if expr == "{}":
            return {}
        if len(expr) >= 2 and expr[0] == expr[-1] == '"':  # a string literal, as a branch
            return self.template(expr[1:-1], env)
        if re.match(r"(var|local)\.\w+ \? ", expr):  # optional parts: all switched on
            return self.expr(expr.split(" ? ", 1)[1].rsplit(" : ", 1)[0], env)
        match = re.fullmatch(r"toset\(\[(.*)\]\)", expr, re.DOTALL)
        if match:
            return re.findall(r'"([^"]*)"', match.group(1))
        match = re.fullmatch(r'coalesce\(var\.\w+, "(.*)"\)', expr)
        if match:  # the default, as the variables are left empty
            return self.template(match.group(1), env)
        match = re.fullmatch(r"toset\(var\.(\w+)\)", expr)
        if match:
            return [f"<var.{match.group(1)}>"]
        if expr.startswith("each."):
            value: Any = env[expr.split(".")[1]]
            for part in expr.split(".")[2:]:
                value = value[part]
            return value
        match = re.fullmatch(r"local\.buckets(?:\.(\w+)|\[(each\.[\w.]+)\])", expr)
        if match:  # every bucket's name by role, created or existing (main.tf)
            return f"bucket:{match.group(1) or self.expr(match.group(2), env)}"
        match = re.fullmatch(r"local\.(\w+)((?:\.\w+)*)", expr)
        if match:
            value = self.value(self.locals[match.group(1)], env)
            for part in [p for p in match.group(2).split(".") if p]:
                value = value[part]
            return value
        match = re.fullmatch(
            r"google_(service_account|storage_bucket)\.this\[(each\.[\w.]+)\]\.\w+", expr
        )
        if match:  # a resource picked by each.value or each.value.<field>
            kind = {"service_account": "sa", "storage_bucket": "bucket"}[match.group(1)]
            return f"{kind}:{self.expr(match.group(2), env)}"
        for pattern, form in _REFERENCES:
            match = re.fullmatch(pattern, expr)
            if match:
                return form.format(*match.groups())
        if re.fullmatch(r"var\.\w+", expr):
            return f"<{expr}>"
        raise AssertionError(f"cannot resolve ${{{expr}}}")


@dataclass(frozen=True)
class Grant:
    account: str
    role: str
    scope: str
    condition: str
    resource: str


def _account(member: str) -> str:
    if member.startswith("serviceAccount:sa:"):
        return member.removeprefix("serviceAccount:sa:")
    if member == "serviceAccount:gcs-agent":
        return "gcs-agent"
    if re.fullmatch(
        r"serviceAccount:service-<?\w+>?@gcp-sa-pubsub\.iam\.gserviceaccount\.com", member
    ):
        return "pubsub-agent"
    if member == "group:cloud-storage-analytics@google.com":
        return "storage-usage-logs"
    if member in ("<var.extra_http_invokers>", "<var.ui_invokers>", "<var.ui_iap_members>"):
        return member[len("<var.") : -1]
    if re.fullmatch(r"serviceAccount:service-\w+@gcp-sa-iap\.iam\.gserviceaccount\.com", member):
        return "iap-agent"
    raise AssertionError(f"unknown member {member!r}")


def _load_all() -> list[dict[str, Any]]:
    return [hcl2.loads(p.read_text(encoding="utf-8")) for p in sorted(TERRAFORM.glob("*.tf"))]


def _grants(files: list[dict[str, Any]]) -> list[Grant]:
    locals_: dict[str, Any] = {}
    for parsed in files:
        for block in parsed.get("locals", []):
            locals_.update({k: v for k, v in block.items() if not k.startswith("__")})
    locals_["project_number"] = "PROJECT_NUMBER"
    resolver = Resolver(locals_)
    grants = []
    for parsed in files:
        for block in parsed.get("resource", []):
            for rtype, named in block.items():
                rtype = rtype.strip('"')
                if rtype not in IAM_SCOPES:
                    continue
                for name, body in named.items():
                    grants += _instances(resolver, rtype, name.strip('"'), body)
    return grants


def _instances(resolver: Resolver, rtype: str, name: str, body: dict[str, Any]) -> list[Grant]:
    each: list[dict[str, Any]] = [{}]
    if "for_each" in body:
        items = resolver.value(body["for_each"], {})
        pairs = items.items() if isinstance(items, dict) else [(v, v) for v in items]
        each = [{"key": k, "value": v} for k, v in pairs]
    out = []
    for env in each:
        role = resolver.value(body["role"], env)
        member = resolver.value(body["member"], env)
        field = IAM_SCOPES[rtype]
        scope = "project" if field is None else str(resolver.value(body[field], env))
        if rtype == "google_iap_web_cloud_run_service_iam_member":
            scope = f"iap:{scope}"  # IAP's policy on the service, not Cloud Run's
        condition = ""
        if "condition" in body:
            condition = resolver.value(body["condition"][0]["expression"], env)
        for dynamic in body.get("dynamic", []):
            if '"condition"' in dynamic:
                condition = env["value"].get("condition") or ""
        out.append(Grant(_account(member), role, scope, condition, f"{rtype}.{name}"))
    return out


# --- the tests ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grants() -> list[Grant]:
    return _grants(_load_all())


def _matches(need: Need, grant: Grant) -> bool:
    if (need.account, need.role, need.scope) != (grant.account, grant.role, grant.scope):
        return False
    if need.condition:
        return need.condition in grant.condition
    return grant.condition == ""


@pytest.mark.parametrize("need", TABLE, ids=lambda n: f"{n.account}:{n.role}:{n.scope}")
def test_every_call_has_its_grant(need: Need, grants: list[Grant]) -> None:
    found = [g for g in grants if _matches(need, g)]
    assert found, (
        f"{need.account} calls {need.call} ({need.where}) but holds no {need.role} on "
        f"{need.scope}" + (f" with a condition on {need.condition}" if need.condition else "")
    )


def test_every_grant_is_needed(grants: list[Grant]) -> None:
    unjustified = [g for g in grants if not any(_matches(n, g) for n in TABLE)]
    assert not unjustified, "grants no run-time call needs:\n" + "\n".join(map(str, unjustified))


@pytest.mark.parametrize("need", TABLE, ids=lambda n: f"{n.account}:{n.where}")
def test_every_call_is_where_the_table_says(need: Need) -> None:
    path, piece = need.where.split("::", 1)
    text = (REPO / path).read_text(encoding="utf-8")
    assert piece in text, f"{path} does not contain {piece!r}: is the table out of date?"


def test_the_table_catches_a_missing_and_an_extra_grant() -> None:
    """The two checks above, on a copy of the Terraform with one grant removed and one added."""
    files = _load_all()
    grants = _grants(files)
    manifest = [g for g in grants if g.resource.endswith("http_manifest_writer")]
    assert len(manifest) == 1
    without = [g for g in grants if g not in manifest]
    need = next(n for n in TABLE if n.account == "http" and n.scope == "bucket:artifacts")
    assert not any(_matches(need, g) for g in without)
    extra = Grant("event", "roles/storage.objectUser", "bucket:artifacts", "", "added")
    assert not any(_matches(n, extra) for n in TABLE)


def test_no_account_holds_a_basic_or_admin_role(grants: list[Grant]) -> None:
    for grant in grants:
        assert grant.role not in ("roles/owner", "roles/editor", "roles/viewer"), grant
        assert not grant.role.endswith(".admin"), grant
