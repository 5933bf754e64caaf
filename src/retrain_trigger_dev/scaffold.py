"""``retrain-trigger init``: a commented ``retrain.yaml`` for a compiled pipeline.

The pipeline's parameters are read from the compiled spec (``root.inputDefinitions``): each is
listed with its type and default, and filled with the placeholder its name suggests
(``manifest_uri`` -> ``{manifest_uri}``, a data URI -> ``{data_uri}``, a commit -> ``{commit_sha}``
...). A required parameter nothing can fill is left commented out, so that ``check`` names it
until it is set; nothing is guessed silently.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrain_trigger.config import TEMPLATE_FIELDS
from retrain_trigger.errors import ConfigError, TemplateError

_TYPES = {
    "STRING": "string",
    "NUMBER_INTEGER": "integer",
    "NUMBER_DOUBLE": "number",
    "BOOLEAN": "boolean",
    "LIST": "list",
    "STRUCT": "mapping",
}

# What each placeholder holds, for the comment listing them.
PLACEHOLDERS = {
    "data_uri": "the data: the object (object mode) or the marker's folder (marker mode)",
    "manifest_uri": "window mode: the manifest listing the batch's objects",
    "bucket": "the object's bucket",
    "object": "the object's name",
    "generation": "the object's generation (a whole number)",
    "size": "the object's size in bytes (a whole number)",
    "commit_sha": "code changes: the commit built",
    "image_uri": "code changes: the training image",
    "build_id": "code changes: the Cloud Build id",
    "branch": "code changes: the branch built",
    "model_uri": "base-model changes: the new base model",
    "event_id": "the event's id",
    "event_time": "the event's time (RFC 3339)",
    "kind": "data, code or model",
    "run_key": "what makes this run unique",
    "route": "the route's name",
    "nonce": "a forced rerun's nonce",
    "project": "the configuration's project",
    "region": "the configuration's region",
    "pipeline_root": "the route's pipeline root",
}


@dataclass(frozen=True)
class Filled:
    value: Any
    why: str


def _guess(name: str, kind: str, artifacts: str) -> Filled | None:
    """The value a parameter's name suggests, or None."""
    lower = name.lower()
    if kind != "STRING":
        return None
    if "manifest" in lower:
        return Filled("{manifest_uri}", "the window's manifest")
    if lower in TEMPLATE_FIELDS and lower not in ("kind", "route", "nonce"):
        return Filled(f"{{{lower}}}", PLACEHOLDERS[lower])
    if "registry" in lower or re.search(r"(^|_)models?_(uri|dir|path)$", lower):
        return Filled(f"{artifacts}/models", "written by the pipeline: never triggers (loop guard)")
    if re.search(r"(^|_)(data|dataset|input|training_data)(_(uri|path|dir|prefix))?$", lower):
        return Filled("{data_uri}", PLACEHOLDERS["data_uri"])
    if "commit" in lower:
        return Filled("{commit_sha}", PLACEHOLDERS["commit_sha"])
    if "image" in lower:
        return Filled("{image_uri}", PLACEHOLDERS["image_uri"])
    if "base_model" in lower:
        return Filled("{model_uri}", PLACEHOLDERS["model_uri"])
    return None


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if value is None:
        return "null"
    return json.dumps(value)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:40] or "my-pipeline"


def scaffold(
    template_path: str,
    output: str,
    *,
    route: str = "",
    bucket: str = "",
    project: str = "",
) -> tuple[str, list[str]]:
    """The text of a ``retrain.yaml`` for the compiled pipeline at ``template_path``, and the
    parameters still to set (required, with nothing to fill them)."""
    from retrain_trigger.spec import parse_template

    try:
        raw = Path(template_path).read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the compiled pipeline: {exc.strerror or exc}", source=template_path
        ) from None
    try:
        template = parse_template(raw, template_path)
    except TemplateError as exc:
        raise ConfigError(str(exc), source=template_path) from None
    name = route or _slug(template.pipeline_name)
    bucket = bucket or f"{name}-data"
    artifacts = f"gs://{name}-artifacts"
    rel = os.path.relpath(Path(template_path).resolve(), Path(output).resolve().parent).replace(
        os.sep, "/"
    )

    params: list[str] = []
    todo: list[str] = []
    uses: set[str] = set()
    width = max((len(n) for n in template.inputs), default=0) + 2
    for param in template.inputs.values():
        kind = _TYPES.get(param.type, param.type.lower())
        if param.type == "NUMBER_INTEGER" and isinstance(param.default, float):
            param = dataclasses.replace(param, default=int(param.default))
        declared = f"{kind}, " + (
            f"default {_yaml_scalar(param.default)}" if param.default is not None else "required"
        )
        filled = _guess(param.name, param.type, artifacts)
        key = f"{param.name}:".ljust(width)
        if filled is not None:
            uses.update(re.findall(r"{([a-z_]+)}", str(filled.value)))
            params.append(
                f"      {key} {_yaml_scalar(filled.value):<22} # {declared}; {filled.why}"
            )
        elif param.required:
            todo.append(param.name)
            params.append(f"      # {key} ...  # {declared}: SET IT (check names it until you do)")
        else:
            params.append(
                f"      # {key} {_yaml_scalar(param.default):<20} # {declared}: uncomment to change"
            )
    mode = "window" if "manifest_uri" in uses else "object"
    wants_code = bool(uses & {"commit_sha", "image_uri", "build_id", "branch"})
    wants_model = "model_uri" in uses
    placeholders = "\n".join(f"#   {{{k}}}  {v}" for k, v in PLACEHOLDERS.items())
    lines = [
        f"# retrain.yaml for the pipeline {template.pipeline_name!r} ({rel}), written by",
        "# `retrain-trigger init`. Check it, then run it on the local stack:",
        "#",
        "#   retrain-trigger --config THIS_FILE check",
        "#   retrain-trigger up --config THIS_FILE",
        "#",
        "# Every field is described in the README's Configuration section. A parameter value may",
        "# use these placeholders, filled from each event (a whole value '{size}' or",
        "# '{generation}' may fill a number; the others are text):",
        placeholders,
        f"project: {project or 'my-project'}",
        "region: us-central1",
        "backend: vertex                 # `retrain-trigger up` runs it locally whatever this says",
        "routes:",
        f"  - name: {name}",
        f"    template: {rel}",
        f"    pipeline_root: {artifacts}/pipeline-root   # run artifacts; never triggers",
        "    parameters:",
        *(params or ["      {}"]),
        "    data:",
        f"      bucket: {bucket}",
        '      include: ["incoming/**"]  # object names (globs) inside the bucket, never gs:// URIs',
        f"      mode: {mode:<21}# object: a run per object; marker: a run per folder when",
        "                                 # its _SUCCESS lands; window: a run per batch",
    ]
    if mode == "window":
        lines += [
            "      quiet_seconds: 30          # the batch closes when no object came for this long",
            "      max_wait_seconds: 600      # ... or when it has been open this long",
        ]
    lines += [
        f"    code: {'true' if wants_code else 'false'}"
        "                     # POST a commit and image to the HTTP function to retrain",
        f"    model: {'true' if wants_model else 'false'}"
        "                    # POST a new base model to retrain",
    ]
    if not params:
        lines[lines.index("    parameters:") + 1] = "      {}"
    return "\n".join(lines) + "\n", todo
