"""The manual ``gcloud builds submit`` of docs/deploy.md (and of cloudbuild.yaml's header), run in
bash against stand-ins for ``terraform``, ``git`` and ``gcloud``: what ``gcloud`` receives must be
substitutions it accepts, each pair whole.

``gcloud builds submit --substitutions`` takes user substitutions (``_NAME``) and, of the
built-ins, only BRANCH_NAME, COMMIT_SHA, REPO_NAME, REVISION_ID, SHORT_SHA and TAG_NAME
(https://cloud.google.com/sdk/gcloud/reference/builds/submit); BUILD_ID and PROJECT_ID are Cloud
Build's own. A value starting with ``^X^`` uses X as the pair separator instead of a comma
(``gcloud topic escaping``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import hcl2
import pytest

REPO = Path(__file__).resolve().parents[2]
OVERRIDABLE = {"BRANCH_NAME", "COMMIT_SHA", "REPO_NAME", "REVISION_ID", "SHORT_SHA", "TAG_NAME"}
COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
INVOKERS = "retrain-build@p.iam.gserviceaccount.com,retrain-scheduler@p.iam.gserviceaccount.com"


def _documented_command() -> str:
    text = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)```", text, re.DOTALL)
    [block] = [b for b in blocks if "gcloud builds submit" in b]
    return block


def _header_command() -> str:
    text = (REPO / "deploy" / "cloudbuild.yaml").read_text(encoding="utf-8")
    lines = text.split("gcloud builds submit", 1)[1].splitlines()
    command = ["gcloud builds submit" + lines[0]]
    for line in lines[1:]:
        line = line.removeprefix("#").strip()
        if not line:
            break
        command.append(line)
    return "\n".join(command)


def _terraform_substitutions() -> dict[str, str]:
    parsed = hcl2.loads((REPO / "deploy" / "terraform" / "cloudbuild.tf").read_text())
    keys = [k.strip('"') for b in parsed["locals"] for k in b.get("cloudbuild_substitutions", {})]
    values = {k: f"value-of-{k.lower().strip('_')}" for k in keys}
    values["_ALLOWED_INVOKERS"] = INVOKERS
    return values


def _split(value: str) -> dict[str, str]:
    """gcloud's reading of a --substitutions value (``gcloud topic escaping``)."""
    separator = ","
    match = re.match(r"\^(.)\^", value)
    if match:
        separator, value = match.group(1), value[match.end() :]
    pairs = {}
    for pair in value.split(separator):
        key, _, item = pair.partition("=")
        assert key not in pairs, f"{key} given twice"
        pairs[key] = item
    return pairs


def _run(command: str, tmp_path: Path) -> list[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    substitutions = _terraform_substitutions()
    flag = "^~^" + "~".join(f"{k}={v}" for k, v in substitutions.items())
    (tmp_path / "flag").write_text(flag)
    stubs = {
        "terraform": (
            'case "$*" in\n'
            f'  "-chdir=deploy/terraform/examples/minimal output -raw cloudbuild_substitutions_flag") cat "{tmp_path / "flag"}";;\n'
            '  "-chdir=deploy/terraform/examples/minimal output -json service_accounts")'
            ' echo \'{"build": "retrain-build@p.iam.gserviceaccount.com"}\';;\n'
            '  *) echo "unexpected terraform $*" >&2; exit 2;;\n'
            "esac\n"
        ),
        "git": f'[ "$*" = "rev-parse HEAD" ] && echo {COMMIT} || exit 2\n',
        "gcloud": (
            f'python3 -c \'import json, sys; json.dump(sys.argv[1:], open("{tmp_path / "argv"}", "w"))\''
            ' "$@"\n'
        ),
    }
    for name, body in stubs.items():
        path = bin_dir / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PROJECT": "p", "HOME": str(tmp_path)}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return list(json.loads((tmp_path / "argv").read_text()))


@pytest.mark.skipif(shutil.which("python3") is None, reason="the gcloud stand-in is python3")
@pytest.mark.parametrize("source", ["docs/deploy.md", "deploy/cloudbuild.yaml"])
def test_gcloud_builds_submit_gets_valid_whole_substitutions(source: str, tmp_path: Path) -> None:
    command = _documented_command() if source == "docs/deploy.md" else _header_command()
    argv = _run(command, tmp_path)
    assert argv[:4] == ["builds", "submit", "--config", "deploy/cloudbuild.yaml"]
    value = argv[argv.index("--substitutions") + 1]
    pairs = _split(value)
    for key in pairs:
        assert key.startswith("_") or key in OVERRIDABLE, f"gcloud refuses the substitution {key}"
    expected = {**_terraform_substitutions(), "COMMIT_SHA": COMMIT}
    assert pairs == expected
    if "--service-account" in argv:
        assert argv[argv.index("--service-account") + 1] == (
            "projects/p/serviceAccounts/retrain-build@p.iam.gserviceaccount.com"
        )


def test_the_split_reads_gcloud_escaping() -> None:
    assert _split("_A=1,_B=2") == {"_A": "1", "_B": "2"}
    assert _split("^~^_A=1,2~_B=3") == {"_A": "1,2", "_B": "3"}
    # The mistake the guide once made: a comma after ^~^ pairs joins the next pair to the value.
    assert _split("^~^_A=1~_B=2,COMMIT_SHA=abc") == {"_A": "1", "_B": "2,COMMIT_SHA=abc"}
