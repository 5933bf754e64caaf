"""Deployable sources of the two Cloud Functions: one deterministic zip per function.

``build_function_zips`` writes ``dist/function_http-<hash>.zip`` and ``dist/function_gcs-<hash>.zip``.
Each holds the function's ``main.py`` (and any other file of its folder), its own pinned
``requirements.txt``, the core package ``src/retrain_trigger/`` whole (the folder is the deploy
boundary: the development wing, ``retrain_trigger_dev``, is never packed), and optionally the
configuration file as ``retrain.yaml`` with the compiled templates it names by relative path. A configuration holding ``auth.hmac_secret`` is
refused: the secret would travel in clear text in both zips (give it to the function through
Secret Manager as ``RETRAIN_HMAC_SECRET``).

The archives are reproducible: entries sorted, timestamps fixed at 1980-01-01, permissions fixed at
0644, no directory entries, no ``__pycache__``. ``<hash>`` is the first 12 hex digits of a SHA-256
over the entries (names and bytes), so the same tree always gives the same name, and the name changes
whenever anything inside changes. That name is the object name in the source bucket, so a new source
is a new object and Cloud Functions redeploys.

Before writing, every packed module is checked for imports of anything of this repository that is
not packed (the development wing, or a missing core module), wherever the import sits: at module
level it would fail the first cold start, inside a function the first event that reaches it. And
every requirement must be pinned with ``==``.

Run as ``python -m retrain_trigger_dev.packaging`` or ``retrain-trigger package``.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import json
import os
import re
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from retrain_trigger.errors import RetrainError

# Folder of each function's source -> its entry point (the function name in its main.py).
FUNCTIONS: Mapping[str, str] = {
    "function_http": "retrain_http",
    "function_gcs": "retrain_event",
}
PACKAGE = "retrain_trigger"
PACKAGE_SOURCE = Path("src") / PACKAGE
# This repository's packages: an import of one of them must find its module in the archive.
OWN_PACKAGES = (PACKAGE, "retrain_trigger_dev")
CONFIG_NAME = "retrain.yaml"
PACKAGE_SUFFIXES = (".py", ".typed")

ZIP_DATE = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o100644
HASH_LENGTH = 12

_SKIPPED_NAMES = {"__pycache__", ".DS_Store", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
_REQUIREMENT = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(\[[A-Za-z0-9._,\s-]+\])?\s*==\s*"
    r"(?P<version>[A-Za-z0-9.+!*_-]+)\s*(;.*)?$"
)


class PackagingError(RetrainError):
    """The sources cannot be packaged as they are; the message says what to fix."""


@dataclass(frozen=True)
class Entry:
    name: str
    data: bytes


def build_function_zips(
    repo_root: str | os.PathLike[str],
    dist_dir: str | os.PathLike[str],
    config_path: str | os.PathLike[str] | None = None,
) -> dict[str, Path]:
    """Builds one zip per function into ``dist_dir``; returns ``{function folder: zip path}``.

    Older zips of the same functions in ``dist_dir`` (other hashes) are removed.
    """
    root = Path(repo_root).resolve()
    dist = Path(dist_dir)
    if not dist.is_absolute():
        dist = root / dist
    core = package_entries(root)
    extra = config_entries(Path(config_path), root) if config_path else []

    built: dict[str, Path] = {}
    for folder in FUNCTIONS:
        entries = function_entries(root / folder) + core + extra
        _reject_duplicates(entries, folder)
        check_imports(core, [e for e in entries if e.name == "main.py"])
        digest = content_hash(entries)
        target = dist / f"{folder}-{digest}.zip"
        _write_atomic(target, zip_bytes(entries))
        _remove_stale(dist, folder, keep=target.name)
        built[folder] = target
    return built


def package_entries(repo_root: Path) -> list[Entry]:
    """The core package's files as ``retrain_trigger/...`` entries: the whole folder."""
    source = repo_root / PACKAGE_SOURCE
    if not (source / "__init__.py").is_file():
        raise PackagingError(f"no package at {source} (expected {PACKAGE_SOURCE}/__init__.py)")
    return [
        Entry(f"{PACKAGE}/{path.relative_to(source).as_posix()}", path.read_bytes())
        for path in _walk(source)
        if path.name.endswith(PACKAGE_SUFFIXES)
    ]


def function_entries(folder: Path) -> list[Entry]:
    """Every file of one function's folder; ``main.py`` and a pinned ``requirements.txt`` required."""
    if not (folder / "main.py").is_file():
        raise PackagingError(f"{folder}/main.py not found")
    requirements = folder / "requirements.txt"
    if not requirements.is_file():
        raise PackagingError(f"{requirements} not found")
    unpinned = unpinned_requirements(requirements.read_text(encoding="utf-8"))
    if unpinned:
        raise PackagingError(
            f"{requirements}: every dependency must be pinned with ==; not pinned: "
            + ", ".join(unpinned)
        )
    entry_point = FUNCTIONS.get(folder.name)
    main_source = (folder / "main.py").read_text(encoding="utf-8")
    if entry_point and not re.search(rf"^def {entry_point}\(", main_source, re.MULTILINE):
        raise PackagingError(f"{folder}/main.py does not define {entry_point}()")
    return [Entry(path.relative_to(folder).as_posix(), path.read_bytes()) for path in _walk(folder)]


def unpinned_requirements(text: str) -> list[str]:
    """Requirement lines not of the form ``name[extras]==version`` (comments and blanks ignored)."""
    bad = []
    for line in _logical_lines(text):
        if line.startswith("-"):
            bad.append(line)  # -r, -e, --index-url ...: the file must stand alone
            continue
        requirement = re.split(r"\s--hash[=\s]", line)[0].strip()
        if not _REQUIREMENT.match(requirement):
            bad.append(line)
    return bad


def config_entries(config_path: Path, repo_root: Path) -> list[Entry]:
    """``retrain.yaml`` plus every template the configuration names by a relative path."""
    import yaml

    from retrain_trigger.config import parse_config
    from retrain_trigger.errors import ConfigError

    if not config_path.is_absolute():
        config_path = Path.cwd() / config_path
    try:
        raw = config_path.read_bytes()
    except OSError as exc:
        raise PackagingError(
            f"cannot read configuration {config_path}: {exc.strerror or exc}"
        ) from None
    data = yaml.safe_load(raw)
    auth = data.get("auth") if isinstance(data, dict) else None
    if isinstance(auth, dict) and auth.get("hmac_secret"):
        # The zips are uploaded to a source bucket and kept by Cloud Functions: whoever can read
        # either could sign requests. The secret belongs in Secret Manager, not in the source.
        raise PackagingError(
            f"{config_path}: auth.hmac_secret holds the HMAC secret, which would be packed in "
            "clear text into both function zips; remove it from the file and give the deployed "
            "function RETRAIN_HMAC_SECRET from Secret Manager instead (gcloud functions deploy "
            "--set-secrets RETRAIN_HMAC_SECRET=<secret>:latest)"
        )
    # The functions get these from their environment; check the rest of the file.
    env = {"RETRAIN_HMAC_SECRET": "packaging-check-placeholder"}
    if isinstance(data, dict) and not data.get("project"):
        env["GOOGLE_CLOUD_PROJECT"] = "packaging-check"
    try:
        config = parse_config(raw, source=str(config_path), env=env)
    except ConfigError as exc:
        raise PackagingError(f"configuration is not valid: {exc}") from None
    entries = [Entry(CONFIG_NAME, raw)]
    seen: set[str] = set()
    base = config_path.parent
    for route in config.routes:
        uri = route.template
        if "://" in uri or uri in seen:
            continue
        seen.add(uri)
        if os.path.isabs(uri):
            raise PackagingError(
                f"route {route.name}: template {uri} is an absolute path; use a path relative to "
                "the configuration file, or a gs:// or https:// URI"
            )
        name = PurePosixPath(Path(uri).as_posix())
        if ".." in name.parts:
            raise PackagingError(
                f"route {route.name}: template {uri} lies outside the configuration's folder; "
                "move it below that folder or upload it (gs:// or https://)"
            )
        candidate = base / uri
        if not candidate.is_file():
            candidate = repo_root / uri
        if not candidate.is_file():
            raise PackagingError(
                f"route {route.name}: template {uri} not found next to {config_path}"
            )
        entries.append(Entry(str(name), candidate.read_bytes()))
    return entries


def content_hash(entries: Iterable[Entry]) -> str:
    """First 12 hex digits of a SHA-256 over the sorted entries' names and bytes."""
    outer = hashlib.sha256()
    for entry in sorted(entries, key=lambda e: e.name):
        outer.update(entry.name.encode("utf-8") + b"\0")
        outer.update(hashlib.sha256(entry.data).digest())
    return outer.hexdigest()[:HASH_LENGTH]


def zip_bytes(entries: Iterable[Entry]) -> bytes:
    """A zip of the entries with fixed order, timestamps and permissions."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for entry in sorted(entries, key=lambda e: e.name):
            info = zipfile.ZipInfo(entry.name, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = FILE_MODE << 16
            archive.writestr(info, entry.data, compresslevel=9)
    return buffer.getvalue()


# --- the import check --------------------------------------------------------------------------


def check_imports(core: Sequence[Entry], mains: Sequence[Entry]) -> None:
    """Fails when a packed module imports a module of this repository that is not packed.

    Every import counts: at module level, inside functions, under ``TYPE_CHECKING``. The core
    never imports the development wing (``retrain_trigger_dev``), and a zip holds the core whole,
    so this finds only a mistake: which file, which line, which module.
    """
    present = {_module_name(e.name) for e in core if e.name.endswith(".py")}
    packages = {m.removesuffix(".__init__") for m in present if m.endswith(".__init__")}
    included = {m.removesuffix(".__init__") for m in present}
    problems: list[str] = []
    for entry in [*core, *mains]:
        if not entry.name.endswith(".py"):
            continue
        current = _module_name(entry.name).removesuffix(".__init__")
        try:
            tree = ast.parse(entry.data, filename=entry.name)
        except SyntaxError as exc:
            raise PackagingError(f"{entry.name} is not valid Python: {exc}") from None
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for target in _targets(node, current, current in packages):
                if target.split(".", 1)[0] not in OWN_PACKAGES:
                    continue
                # ``from retrain_trigger.x import y``: module ``x.y``, or attribute ``y`` of ``x``.
                if target in included or (
                    isinstance(node, ast.ImportFrom) and target.rsplit(".", 1)[0] in included
                ):
                    continue
                problems.append(
                    f"{entry.name}:{node.lineno} imports {target}, which is not in the archive"
                )
    if problems:
        raise PackagingError(
            "packed modules import modules that are not packed (the core must not import the "
            "development wing):\n  " + "\n  ".join(problems)
        )


def _module_name(entry_name: str) -> str:
    return entry_name.removesuffix(".py").replace("/", ".")


def _targets(node: ast.Import | ast.ImportFrom, current: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parts = current.split(".")
        if not is_package:
            parts = parts[:-1]
        parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
        base = ".".join([*parts, base] if base else parts)
    return [f"{base}.{alias.name}" for alias in node.names] if base.startswith(PACKAGE) else [base]


# --- files -------------------------------------------------------------------------------------


def _walk(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(
            d
            for d in dirnames
            if d not in _SKIPPED_NAMES and not d.startswith(".") and not d.endswith(".egg-info")
        )
        for filename in sorted(filenames):
            if (
                filename in _SKIPPED_NAMES
                or filename.startswith(".")
                or filename.endswith((".pyc", ".pyo"))
            ):
                continue
            path = Path(dirpath) / filename
            if path.is_file():
                found.append(path)
    return found


def _logical_lines(text: str) -> list[str]:
    lines, current = [], ""
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            lines.append(current.strip())
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def _reject_duplicates(entries: Sequence[Entry], folder: str) -> None:
    names = [e.name for e in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise PackagingError(
            f"{folder}: more than one file would be written as {', '.join(duplicates)}"
        )


def _write_atomic(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_file() and target.read_bytes() == data:
        return
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _remove_stale(dist: Path, folder: str, keep: str) -> None:
    pattern = re.compile(rf"^{re.escape(folder)}-[0-9a-f]{{{HASH_LENGTH}}}\.zip$")
    for path in dist.iterdir():
        if path.name != keep and pattern.match(path.name):
            path.unlink()


# --- command line ------------------------------------------------------------------------------


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The ``package`` options; pass a subparser to add them to another command line."""
    parser = parser or argparse.ArgumentParser(
        prog="retrain-trigger package",
        description="Build the deployable zip of each Cloud Function (deterministic, content-hashed).",
    )
    parser.add_argument("--repo-root", default=".", help="repository root (default: .)")
    parser.add_argument(
        "--dist", default="dist", help="output folder, relative to the root (default: dist)"
    )
    parser.add_argument(
        "--config",
        default=os.environ.get("RETRAIN_CONFIG", ""),
        help="configuration file to include as retrain.yaml, with its relative templates "
        "(default: $RETRAIN_CONFIG; the deployed functions need one)",
    )
    parser.add_argument(
        "--tfvars",
        default="",
        help="also write the zip paths as a Terraform variables file (JSON), e.g. "
        "deploy/terraform/functions.auto.tfvars.json",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of lines")
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        built = build_function_zips(args.repo_root, args.dist, args.config or None)
    except PackagingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.config:
        print(
            "note: no configuration included; the functions will look for retrain.yaml "
            "(pass --config to package one)",
            file=sys.stderr,
        )
    if args.tfvars:
        tfvars = {
            "function_http_zip": str(built["function_http"].resolve()),
            "function_gcs_zip": str(built["function_gcs"].resolve()),
        }
        Path(args.tfvars).write_text(json.dumps(tfvars, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps({name: str(path) for name, path in built.items()}, indent=2))
    else:
        for name, path in built.items():
            print(f"{name}\t{path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
