"""Deployable sources of the two Cloud Functions: one deterministic zip per function.

``build_function_zips`` writes ``dist/function_http-<hash>.zip`` and ``dist/function_gcs-<hash>.zip``.
Each holds the function's ``main.py`` (and any other file of its folder), its own pinned
``requirements.txt``, the core package as ``retrain_trigger/`` without the modules that only the
command line and the local stack use, and optionally the configuration file as ``retrain.yaml`` with
the compiled templates it names by relative path. A configuration holding ``auth.hmac_secret`` is
refused: the secret would travel in clear text in both zips (give it to the function through
Secret Manager as ``RETRAIN_HMAC_SECRET``).

The archives are reproducible: entries sorted, timestamps fixed at 1980-01-01, permissions fixed at
0644, no directory entries, no ``__pycache__``. ``<hash>`` is the first 12 hex digits of a SHA-256
over the entries (names and bytes), so the same tree always gives the same name, and the name changes
whenever anything inside changes. That name is the object name in the source bucket, so a new source
is a new object and Cloud Functions redeploys.

Before writing, every included module is checked for module-level imports of excluded modules (which
would fail on the first cold start), and every requirement must be pinned with ``==``.

Run as ``python -m retrain_trigger.packaging`` or ``retrain-trigger package``.
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
CONFIG_NAME = "retrain.yaml"

# Modules (paths relative to the package) that serve the command line and the local stack only.
EXCLUDED: tuple[str, ...] = (
    "localstack/",
    "backends/local.py",
    "backends/_localrun.py",
    "ledger.py",
    "sampledata.py",
    "packaging.py",
    "cli.py",
    "__main__.py",
)
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
    modules = source_modules(root)
    extra = config_entries(Path(config_path), root) if config_path else []

    built: dict[str, Path] = {}
    for folder in FUNCTIONS:
        entries = function_entries(root / folder) + core + extra
        _reject_duplicates(entries, folder)
        check_imports(core, [e for e in entries if e.name == "main.py"], modules)
        digest = content_hash(entries)
        target = dist / f"{folder}-{digest}.zip"
        _write_atomic(target, zip_bytes(entries))
        _remove_stale(dist, folder, keep=target.name)
        built[folder] = target
    return built


def package_entries(repo_root: Path) -> list[Entry]:
    """The core package's modules as ``retrain_trigger/...`` entries, excluded modules left out."""
    source = repo_root / PACKAGE_SOURCE
    if not (source / "__init__.py").is_file():
        raise PackagingError(f"no package at {source} (expected {PACKAGE_SOURCE}/__init__.py)")
    entries = []
    for path in _walk(source):
        relative = path.relative_to(source).as_posix()
        if not relative.endswith(PACKAGE_SUFFIXES) or is_excluded(relative):
            continue
        entries.append(Entry(f"{PACKAGE}/{relative}", path.read_bytes()))
    return entries


def source_modules(repo_root: Path) -> set[str]:
    """Dotted names of every module of the package's source tree, local-only ones included."""
    source = repo_root / PACKAGE_SOURCE
    names = set()
    for path in _walk(source):
        if path.suffix == ".py":
            relative = path.relative_to(source).with_suffix("").as_posix().replace("/", ".")
            names.add(f"{PACKAGE}.{relative}".removesuffix(".__init__"))
    return names


def lazy_import_notes(repo_root: str | os.PathLike[str]) -> list[str]:
    """Imports inside functions of packaged modules that name modules left out of the archive."""
    root = Path(repo_root).resolve()
    mains = [
        Entry("main.py", (root / f / "main.py").read_bytes())
        for f in FUNCTIONS
        if (root / f / "main.py").is_file()
    ]
    return check_imports(package_entries(root), mains, source_modules(root))


def is_excluded(relative: str) -> bool:
    """Whether a path relative to the package is local-only (see :data:`EXCLUDED`)."""
    return any(
        relative.startswith(item) if item.endswith("/") else relative == item for item in EXCLUDED
    )


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


def check_imports(
    core: Sequence[Entry], mains: Sequence[Entry], all_modules: set[str] | None = None
) -> list[str]:
    """Fails when an included module imports an excluded one at import time.

    ``all_modules`` names every module of the source tree, excluded ones too (dotted names); it tells
    ``from retrain_trigger.x import y`` of a module ``y`` from that of an attribute ``y``. Returns
    notes about imports inside functions that name modules missing from the archive: those fail
    only when that code runs (``create_backend`` importing the local backend, for instance).
    """
    present = {_module_name(e.name) for e in core if e.name.endswith(".py")}
    packages = {m.removesuffix(".__init__") for m in present if m.endswith(".__init__")}
    included = {m.removesuffix(".__init__") for m in present}
    known = included | (all_modules or set())
    problems: list[str] = []
    notes: list[str] = []
    for entry in [*core, *mains]:
        if not entry.name.endswith(".py"):
            continue
        current = _module_name(entry.name).removesuffix(".__init__")
        try:
            tree = ast.parse(entry.data, filename=entry.name)
        except SyntaxError as exc:
            raise PackagingError(f"{entry.name} is not valid Python: {exc}") from None
        for node, eager in _imports(tree):
            for target in _targets(node, current, current in packages):
                if target != PACKAGE and not target.startswith(PACKAGE + "."):
                    continue
                module = (
                    target
                    if target in known or isinstance(node, ast.Import)
                    else (target.rsplit(".", 1)[0])
                )
                if module in included:
                    continue
                message = (
                    f"{entry.name}:{node.lineno} imports {module}, which is not in the archive"
                )
                (problems if eager else notes).append(message)
    if problems:
        raise PackagingError(
            "modules on the serving path import local-only modules at import time:\n  "
            + "\n  ".join(problems)
        )
    return notes


def _module_name(entry_name: str) -> str:
    return entry_name.removesuffix(".py").replace("/", ".")


def _imports(tree: ast.Module) -> Iterable[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import with whether it runs at import time (module or class level, not TYPE_CHECKING)."""

    def visit(
        nodes: Iterable[ast.stmt], eager: bool
    ) -> Iterable[tuple[ast.Import | ast.ImportFrom, bool]]:
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                yield node, eager
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                yield from visit(node.orelse, eager)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                yield from visit(node.body, False)
            elif isinstance(node, ast.ClassDef):
                yield from visit(node.body, eager)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    children = getattr(node, field, None)
                    if isinstance(children, list):
                        yield from visit(
                            (c for c in children if isinstance(c, ast.stmt | ast.excepthandler)),  # type: ignore[misc]
                            eager,
                        )

    yield from visit(tree.body, True)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


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
    parser.add_argument(
        "--verbose", action="store_true", help="also list lazy imports of left-out modules"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        built = build_function_zips(args.repo_root, args.dist, args.config or None)
    except PackagingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.verbose:
        for note in lazy_import_notes(args.repo_root):
            print(f"note: {note} (imported only when that code runs)", file=sys.stderr)
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
