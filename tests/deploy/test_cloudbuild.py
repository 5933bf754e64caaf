"""deploy/cloudbuild.yaml: parses, pins every builder, declares and documents every substitution,
its shell scripts are valid once substituted, and it deploys privately and fails unless a run was
submitted (or already existed)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLOUDBUILD = REPO / "deploy" / "cloudbuild.yaml"
FUNCTIONS_TF = REPO / "deploy" / "terraform" / "functions.tf"
CLOUDBUILD_TF = REPO / "deploy" / "terraform" / "cloudbuild.tf"

ALL_USERS = "all" + "Users"
ALL_AUTHENTICATED_USERS = "all" + "Authenticated" + "Users"
ALLOW_UNAUTHENTICATED = "--" + "allow-" + "unauthenticated"

BUILT_IN = {
    "PROJECT_ID",
    "PROJECT_NUMBER",
    "LOCATION",
    "BUILD_ID",
    "COMMIT_SHA",
    "SHORT_SHA",
    "REVISION_ID",
    "BRANCH_NAME",
    "TAG_NAME",
    "REF_NAME",
    "REPO_NAME",
    "REPO_FULL_NAME",
    "TRIGGER_NAME",
    "TRIGGER_BUILD_CONFIG_PATH",
    "SERVICE_ACCOUNT",
    "SERVICE_ACCOUNT_EMAIL",
}
# ${NAME} or $NAME, not preceded by another $ (Cloud Build turns $$ into a literal $).
SUBSTITUTION = re.compile(r"(?<!\$)\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


@pytest.fixture(scope="module")
def build() -> dict[str, Any]:
    with open(CLOUDBUILD, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _steps(build: dict[str, Any]) -> list[dict[str, Any]]:
    return build["steps"]


def _step(build: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in _steps(build) if s.get("id") == step_id)


def _script(step: dict[str, Any]) -> str:
    return "\n".join(str(a) for a in step.get("args", []))


def _substitute(text: str, values: dict[str, str]) -> str:
    """What Cloud Build does to a step before running it."""
    text = SUBSTITUTION.sub(lambda m: values[m.group(1) or m.group(2)], text)
    return text.replace("$$", "$")


def test_every_step_names_a_pinned_builder(build: dict[str, Any]) -> None:
    assert len(_steps(build)) >= 8
    for step in _steps(build):
        name = step["name"]
        assert "$" not in name, name
        digest = re.search(r"@sha256:[0-9a-f]{64}$", name)
        tag = re.search(r":([A-Za-z0-9_.-]+)$", name.split("/")[-1])
        assert digest or tag, f"{name} is not pinned"
        if not digest:
            assert tag is not None
            assert tag.group(1) != "latest" and re.search(r"\d+\.\d+", tag.group(1)), name


def test_every_step_has_an_id_and_waits_only_for_earlier_steps(build: dict[str, Any]) -> None:
    seen: list[str] = []
    for step in _steps(build):
        assert step.get("id"), step["name"]
        for earlier in step.get("waitFor", []):
            assert earlier in seen, f"{step['id']} waits for {earlier}, which is not earlier"
        seen.append(step["id"])
    assert len(seen) == len(set(seen))


def test_substitutions_are_declared_documented_and_not_project_specific(
    build: dict[str, Any],
) -> None:
    declared = set(build["substitutions"])
    header = CLOUDBUILD.read_text(encoding="utf-8").split("\nsubstitutions:")[0]
    used = set()
    for step in _steps(build):
        for text in [_script(step), *step.get("env", [])]:
            for match in SUBSTITUTION.finditer(text):
                used.add(match.group(1) or match.group(2))
    user_defined = {u for u in used if u.startswith("_")}
    assert user_defined <= declared, user_defined - declared
    assert used - user_defined <= BUILT_IN, used - user_defined - BUILT_IN
    assert declared <= user_defined, f"declared but unused: {declared - user_defined}"
    for name in declared:
        assert re.search(rf"^#\s+{name}\s", header, re.MULTILINE), f"{name} is not documented"
    for name in ("_REGION", "_AR_REPO", "_TEMPLATE_BUCKET", "_HTTP_SA", "_EVENT_SA"):
        assert name in declared
    # Nothing that names one project: those substitutions default to empty.
    for name in ("_REGION", "_TEMPLATE_BUCKET", "_SOURCE_BUCKET", "_HTTP_SA", "_EVENT_SA"):
        assert build["substitutions"][name] == ""


def test_terraform_provides_every_substitution(build: dict[str, Any]) -> None:
    with open(CLOUDBUILD_TF, encoding="utf-8") as fh:
        parsed = hcl2.load(fh)
    provided = set()
    for block in parsed["locals"]:
        provided |= {k.strip('"') for k in block.get("cloudbuild_substitutions", {})}
    assert set(build["substitutions"]) == provided


# The pipeline's own build inputs: substitutions whose defaults are today's MNIST build, fed by
# module variables with the same defaults.
PIPELINE_SUBSTITUTIONS = {
    "_IMAGE_NAME": ("training_image_name", "mnist-training"),
    "_DOCKERFILE": ("training_dockerfile", "pipeline_specs/Dockerfile"),
    "_COMPILE_MODULE": ("pipeline_compile_module", "pipeline_specs.compile"),
    "_TEMPLATE_DIR": ("pipeline_template_dir", "pipeline_specs"),
    "_TEMPLATE_NAME": ("pipeline_template_name", "mnist_training.yaml"),
}


def test_the_pipeline_build_is_parameterised_with_todays_defaults(build: dict[str, Any]) -> None:
    with open(CLOUDBUILD_TF, encoding="utf-8") as fh:
        substitutions = {
            k.strip('"'): v
            for b in hcl2.load(fh)["locals"]
            for k, v in b.get("cloudbuild_substitutions", {}).items()
        }
    with open(REPO / "deploy" / "terraform" / "variables.tf", encoding="utf-8") as fh:
        variables = {k.strip('"'): v for b in hcl2.load(fh)["variable"] for k, v in b.items()}
    for name, (variable, default) in PIPELINE_SUBSTITUTIONS.items():
        assert build["substitutions"][name] == default, name
        assert substitutions[name] == f"${{var.{variable}}}", name
        assert variables[variable]["default"].strip('"') == default, variable
    # With the defaults, the steps run exactly the commands of the MNIST build.
    values = _values(build)
    image = _substitute(_script(_step(build, "build-image")), values)
    assert 'docker build --file "pipeline_specs/Dockerfile"' in image
    compile_step = _substitute(_script(_step(build, "compile")), values)
    assert 'python -m "pipeline_specs.compile" --image "$(cat /workspace/image_uri.txt)"' in (
        compile_step
    )
    assert '--output "pipeline_specs/mnist_training.yaml"' in compile_step
    upload = _substitute(_script(_step(build, "upload-template")), values)
    assert 'gcloud storage cp --no-clobber "pipeline_specs/mnist_training.yaml"' in upload
    assert "templates/sub-commit_sha/mnist_training.yaml" in upload
    # Nothing names the MNIST pipeline outside those defaults.
    for step in _steps(build):
        assert "mnist" not in _script(step), step["id"]


def test_the_functions_get_the_environment_terraform_gives_them(build: dict[str, Any]) -> None:
    with open(FUNCTIONS_TF, encoding="utf-8") as fh:
        parsed = hcl2.load(fh)
    terraform_env = set()
    for block in parsed["locals"]:
        terraform_env |= {k.strip('"') for k in block.get("function_env", {})}
    event_env = set()
    for block in parsed["locals"]:
        event_env |= {k.strip('"') for k in block.get("event_function_env", {})}
    assert event_env == {"RETRAIN_OUTCOME_TOPIC", "RETRAIN_NOTIFICATION_TOPIC"}
    for step_id, extra in (
        ("deploy-http", {"RETRAIN_AUTH", "RETRAIN_AUDIENCE", "RETRAIN_ALLOWED_INVOKERS"}),
        ("deploy-event", event_env),
    ):
        script = _script(_step(build, step_id))
        heredoc = script.split("<<EOF", 1)[1].split("\nEOF", 1)[0]
        keys = set(re.findall(r"^\s*([A-Z_]+):", heredoc, re.MULTILINE))
        assert keys == terraform_env | extra, step_id


@pytest.mark.parametrize("step_id", ["deploy-http", "deploy-event"])
def test_functions_are_deployed_private_as_gen2(build: dict[str, Any], step_id: str) -> None:
    script = _script(_step(build, step_id))
    for flag in (
        "gcloud functions deploy",
        "--gen2",
        "--runtime python312",
        "--service-account",
        "--build-service-account",
        "--no-allow-unauthenticated",
        "--env-vars-file",
        '--source "gs://${_SOURCE_BUCKET}/',
    ):
        assert flag in script, f"{step_id}: {flag}"
    entry = "retrain_http" if step_id == "deploy-http" else "retrain_event"
    assert f"--entry-point {entry}" in script


def test_the_event_function_retries_when_it_has_its_own_pubsub_trigger(
    build: dict[str, Any],
) -> None:
    script = _script(_step(build, "deploy-event"))
    topic_branch = script.split('if [ "${_EVENT_DELIVERY}" = topic ]; then', 1)[1].split("else", 1)[
        0
    ]
    assert '--trigger-topic "${_EVENTS_TOPIC}"' in topic_branch and "--retry" in topic_branch
    assert build["substitutions"]["_EVENT_DELIVERY"] == "push"


def test_nothing_is_public(build: dict[str, Any]) -> None:
    text = CLOUDBUILD.read_text(encoding="utf-8")
    for forbidden in (ALL_USERS, ALL_AUTHENTICATED_USERS, ALLOW_UNAUTHENTICATED):
        assert forbidden not in text
    for step in _steps(build):
        for arg in step.get("args", []):
            assert re.search(r"--allow-unauth", str(arg)) is None


def test_the_image_is_pushed_by_commit_and_used_by_digest(build: dict[str, Any]) -> None:
    image = _script(_step(build, "build-image"))
    assert '--file "${_DOCKERFILE}"' in image and ':$COMMIT_SHA"' in image
    assert 'docker push "$$image"' in image
    digest = _script(_step(build, "resolve-digest"))
    assert "image_summary.digest" in digest and '"$$repo@$$digest"' in digest
    compile_step = _script(_step(build, "compile"))
    assert 'python -m "${_COMPILE_MODULE}" --image' in compile_step
    assert "image_uri.txt" in compile_step
    upload = _script(_step(build, "upload-template"))
    assert "gs://${_TEMPLATE_BUCKET}/templates/$COMMIT_SHA/${_TEMPLATE_NAME}" in upload
    assert "--no-clobber" in upload


def test_the_build_fails_unless_a_run_was_submitted_or_already_exists(
    build: dict[str, Any],
) -> None:
    step = _step(build, "trigger-run")
    script = _script(step)
    assert 'url="${_HTTP_AUDIENCE}"' in script
    assert 'gcloud auth print-identity-token --audiences="$$url"' in script
    # Cloud Run checks (and strips) X-Serverless-Authorization and passes Authorization on signed.
    assert '-H "X-Serverless-Authorization: Bearer $$token"' in script
    assert '-H "Authorization: Bearer $$token"' in script
    assert 'decision not in ("submitted", "duplicate")' in script
    for field in ("kind", "commit_sha", "image_uri", "build_id", "branch", "template"):
        assert f'"{field}":' in script
    assert set(step["waitFor"]) == {"deploy-http", "deploy-event"}


def _values(build: dict[str, Any]) -> dict[str, str]:
    values = {name: f"sub-{name.lower().strip('_')}" for name in BUILT_IN}
    values.update(
        {k: (str(v) or f"sub-{k.lower().strip('_')}") for k, v in build["substitutions"].items()}
    )
    return values


def test_every_script_is_valid_shell_once_substituted(
    build: dict[str, Any], tmp_path: Path
) -> None:
    values = _values(build)
    for step in _steps(build):
        entrypoint = step.get("entrypoint", "")
        args = [_substitute(str(a), values) for a in step.get("args", [])]
        script = args[-1]
        assert args[-2].endswith("c"), step["id"]
        shell = (
            (shutil.which("dash") or shutil.which("sh"))
            if entrypoint == "sh"
            else shutil.which("bash")
        )
        assert shell, entrypoint
        path = tmp_path / f"{step['id']}.sh"
        path.write_text(script, encoding="utf-8")
        result = subprocess.run(
            [shell, "-n", str(path)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"{step['id']}: {result.stderr}"


def test_the_decision_check_behaves(build: dict[str, Any], tmp_path: Path) -> None:
    """Runs the trigger step's final check against answers written to a scratch file."""
    script = _substitute(_script(_step(build, "trigger-run")), _values(build))
    check = script.rsplit("<<'EOF'\n", 1)[1].split("\nEOF", 1)[0]
    check = check.replace("/workspace/trigger-answer.json", str(tmp_path / "answer.json"))
    cases = [
        ('{"decision": "submitted", "job_name": "j"}', 0),
        ('{"decision": "duplicate", "job_name": "j"}', 0),
        ('{"decision": "skipped", "reason": "r"}', 1),
        ('{"decision": "failed"}', 1),
        ("<html>503</html>", 1),
    ]
    for answer, code in cases:
        (tmp_path / "answer.json").write_text(answer)
        result = subprocess.run(
            [sys.executable, "-", "200"], input=check, capture_output=True, text=True, check=False
        )
        assert result.returncode == code, (answer, result.stderr)


def _function_labels_set_by_cloud_build(build: dict[str, Any]) -> set[str]:
    keys: set[str] = set()
    for step_id in ("deploy-http", "deploy-event"):
        match = re.search(r'--update-labels "([^"]+)"', _script(_step(build, step_id)))
        assert match, step_id
        keys |= {pair.split("=", 1)[0] for pair in match.group(1).split(",")}
    return keys


def test_terraform_never_sets_the_labels_cloud_build_sets(build: dict[str, Any]) -> None:
    """The functions' labels are non-authoritative in the google provider (it manages only the
    keys in its configuration), so labels that Cloud Build adds survive terraform apply as long
    as Terraform sets none of those keys: a shared key would flip on every apply and deploy."""
    keys = _function_labels_set_by_cloud_build(build)
    assert keys == {"deployed-by", "commit"}
    with open(REPO / "deploy" / "terraform" / "main.tf", encoding="utf-8") as fh:
        main = hcl2.load(fh)
    labels_expr = next(b["labels"] for b in main["locals"] if "labels" in b)
    literal = labels_expr.split("merge({", 1)[1].split("}", 1)[0]
    terraform_keys = set(re.findall(r"([A-Za-z][\w-]*)\s*=", literal))
    assert terraform_keys == {"app", "managed-by"}
    assert not keys & terraform_keys
    with open(REPO / "deploy" / "terraform" / "variables.tf", encoding="utf-8") as fh:
        variables = {k.strip('"'): v for b in hcl2.load(fh)["variable"] for k, v in b.items()}
    condition = variables["labels"]["validation"][0]["condition"]
    for key in keys:
        assert f'"{key}"' in condition, f"var.labels may set {key}"


def _run_check_step(
    build: dict[str, Any], tmp_path: Path, **overrides: str
) -> subprocess.CompletedProcess[str]:
    """The check-substitutions step as Cloud Build runs it, with a gcloud that finds no image."""
    values = {**_values(build), **overrides}
    script = _substitute(str(_step(build, "check-substitutions")["args"][-1]), values)
    workspace = tmp_path / "workspace"
    workspace.mkdir(exist_ok=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    gcloud = bin_dir / "gcloud"
    gcloud.write_text("#!/bin/sh\nexit 1\n")
    gcloud.chmod(0o755)
    bash = shutil.which("bash")
    assert bash
    return subprocess.run(
        [bash, "-euo", "pipefail", "-c", script.replace("/workspace/", f"{workspace}/")],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("_COMPILE_MODULE", "training.compile; curl evil", "_COMPILE_MODULE must be a dotted"),
        ("_COMPILE_MODULE", "a..b", "_COMPILE_MODULE must be a dotted"),
        ("_TEMPLATE_NAME", "../../etc/x.yaml", "_TEMPLATE_NAME must be a .yaml or .yml"),
        ("_TEMPLATE_NAME", "churn.json", "_TEMPLATE_NAME must be a .yaml or .yml"),
        ("_TEMPLATE_DIR", "../outside", "_TEMPLATE_DIR must be a relative folder"),
        ("_TEMPLATE_DIR", "/abs", "_TEMPLATE_DIR must be a relative folder"),
        ("_OUTCOME_TOPIC", "", "missing substitutions: _OUTCOME_TOPIC"),
    ],
)
def test_the_build_refuses_unusable_pipeline_substitutions(
    build: dict[str, Any], tmp_path: Path, name: str, value: str, message: str
) -> None:
    result = _run_check_step(build, tmp_path, **{name: value})
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stderr


def test_the_build_takes_a_teams_own_pipeline(build: dict[str, Any], tmp_path: Path) -> None:
    result = _run_check_step(
        build,
        tmp_path,
        _COMPILE_MODULE="training.compile",
        _TEMPLATE_DIR="training/compiled",
        _TEMPLATE_NAME="churn_pipeline.yml",
        _IMAGE_NAME="churn-trainer",
    )
    assert result.returncode == 0, result.stderr
    repo = (tmp_path / "workspace" / "image_repo.txt").read_text().strip()
    assert repo.endswith("/churn-trainer")
