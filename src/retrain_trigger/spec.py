"""Compiled pipeline templates: read once per instance, checked against the parameters they take.

A template is the YAML that ``kfp.compiler`` writes (a ``PipelineSpec``, optionally followed by a
``PlatformSpec`` document). It may live on local disk, in GCS (``gs://``, read with
google-cloud-storage) or in an Artifact Registry KFP repository (``https://…-kfp.pkg.dev/…``, read
with google-auth). Each URI is read once per process and cached; the storage and auth libraries are
imported only when such a template is first read.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from retrain_trigger.errors import BackendUnavailable, ConfigError, TemplateError, Unprocessable

if TYPE_CHECKING:
    from retrain_trigger.config import Config, Route

MAX_TEMPLATE_BYTES = 16 << 20
# Seconds a remote template read may take, retries included (``for_config`` passes the
# submit deadline).
READ_DEADLINE = 20.0

PARAMETER_TYPES = ("STRING", "NUMBER_INTEGER", "NUMBER_DOUBLE", "BOOLEAN", "LIST", "STRUCT")


@dataclass(frozen=True)
class ParamDef:
    name: str
    type: str
    default: Any = None
    optional: bool = False

    @property
    def required(self) -> bool:
        return not self.optional and self.default is None


@dataclass(frozen=True)
class PipelineTemplate:
    uri: str
    document: Mapping[str, Any]
    inputs: Mapping[str, ParamDef]
    digest: str
    platform_spec: Mapping[str, Any] | None = None
    raw: bytes = field(default=b"", repr=False)

    @property
    def pipeline_name(self) -> str:
        return str(self.document.get("pipelineInfo", {}).get("name", ""))

    def check_names(self, names: set[str]) -> None:
        """Configuration-time check: every name is an input and every required input is set.

        Raises :class:`ConfigError` without a location; :meth:`TemplateCache.check` names it.
        """
        unknown = sorted(names - set(self.inputs))
        if unknown:
            raise ConfigError(
                f"unknown pipeline parameter(s) {', '.join(unknown)}; "
                f"{self.uri} takes: {', '.join(sorted(self.inputs)) or 'none'}"
            )
        missing = sorted(n for n, p in self.inputs.items() if p.required and n not in names)
        if missing:
            raise ConfigError(
                f"required pipeline parameter(s) {', '.join(missing)} not set "
                f"(add them under parameters)"
            )

    def coerce(self, values: Mapping[str, Any], *, complete: bool = True) -> dict[str, Any]:
        """Converts values to the types the spec declares; raises Unprocessable if not.

        With ``complete`` every required parameter must be present too.
        """
        out: dict[str, Any] = {}
        for name, value in values.items():
            param = self.inputs.get(name)
            if param is None:
                raise Unprocessable(f"pipeline {self.pipeline_name!r} has no parameter {name!r}")
            out[name] = _coerce(param, value)
        missing = [n for n, p in self.inputs.items() if p.required and n not in out]
        if complete and missing:
            raise Unprocessable(
                f"required pipeline parameter(s) not set: {', '.join(sorted(missing))}"
            )
        return out


def _coerce(param: ParamDef, value: Any) -> Any:
    kind = param.type
    try:
        if kind == "STRING":
            if isinstance(value, bool | dict | list):
                raise ValueError
            return str(value)
        if kind == "BOOLEAN":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "1", "yes"):
                return True
            if text in ("false", "0", "no"):
                return False
            raise ValueError
        if kind == "NUMBER_INTEGER":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(str(value).strip()) if not isinstance(value, float) else int(value)
        if kind == "NUMBER_DOUBLE":
            if isinstance(value, bool):
                raise ValueError
            number = float(str(value).strip())
            if not math.isfinite(number):
                raise ValueError
            return number
        if kind == "LIST":
            if isinstance(value, str):
                import json

                value = json.loads(value)
            if not isinstance(value, list):
                raise ValueError
            return value
        if kind == "STRUCT":
            if isinstance(value, str):
                import json

                value = json.loads(value)
            if not isinstance(value, dict):
                raise ValueError
            return value
    except (ValueError, TypeError, OverflowError):
        shown = repr(value) if len(repr(value)) < 80 else repr(value)[:77] + "..."
        raise Unprocessable(
            f"parameter {param.name!r} must be {kind.lower().replace('number_', '')}, got {shown}"
        ) from None
    raise Unprocessable(f"parameter {param.name!r} has unsupported type {kind}")


def parse_template(raw: bytes, uri: str) -> PipelineTemplate:
    """Parses compiled KFP YAML (or JSON) into a template; TemplateError when it is not one."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        docs = [d for d in yaml.load_all(raw, Loader=loader) if d is not None]
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        raise TemplateError(
            f"template {uri} is not valid YAML: {str(exc).splitlines()[0]}"
        ) from None
    if not docs or not isinstance(docs[0], dict):
        raise TemplateError(f"template {uri} is empty or not a mapping")
    document = docs[0]
    if "pipelineSpec" in document and isinstance(document["pipelineSpec"], dict):
        # A PipelineJob JSON (as the v1 compiler or the SDK's job files write it).
        document = document["pipelineSpec"]
    if "root" not in document or "pipelineInfo" not in document:
        raise TemplateError(f"template {uri} is not a compiled KFP pipeline (no root/pipelineInfo)")
    platform = None
    if len(docs) > 1 and isinstance(docs[1], dict) and "platforms" in docs[1]:
        platform = docs[1]
    inputs: dict[str, ParamDef] = {}
    definitions = (document.get("root") or {}).get("inputDefinitions") or {}
    for name, spec in (definitions.get("parameters") or {}).items():
        kind = str(spec.get("parameterType", "STRING"))
        if kind not in PARAMETER_TYPES:
            raise TemplateError(f"template {uri}: parameter {name!r} has unknown type {kind}")
        inputs[name] = ParamDef(
            name=name,
            type=kind,
            default=spec.get("defaultValue"),
            optional=bool(spec.get("isOptional", False)),
        )
    for name in definitions.get("artifacts") or {}:
        raise TemplateError(f"template {uri}: pipeline input artifact {name!r} is not supported")
    return PipelineTemplate(
        uri=uri,
        document=document,
        inputs=inputs,
        digest="sha256:" + hashlib.sha256(raw).hexdigest(),
        platform_spec=platform,
        raw=raw,
    )


Reader = Callable[[str], bytes]


def _read_local(uri: str) -> bytes:
    path = uri[len("file://") :] if uri.startswith("file://") else uri
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_TEMPLATE_BYTES + 1)
    except FileNotFoundError:
        raise TemplateError(f"template {uri} not found") from None
    except OSError as exc:
        raise TemplateError(f"template {uri} cannot be read: {exc.strerror or exc}") from None
    if len(raw) > MAX_TEMPLATE_BYTES:
        raise TemplateError(f"template {uri} is larger than {MAX_TEMPLATE_BYTES} bytes")
    return raw


def _read_gcs(uri: str, deadline: float) -> bytes:
    from retrain_trigger import gcs

    return gcs.read_bytes(uri, max_bytes=MAX_TEMPLATE_BYTES, deadline=deadline)


def _read_https(uri: str, deadline: float) -> bytes:
    """Artifact Registry KFP repositories serve the template at the template URI itself."""
    import google.auth
    import google.auth.transport.requests
    from google.auth.exceptions import GoogleAuthError

    try:
        credentials, _ = google.auth.default(
            scopes=["https://www.googleapis.com/auth/cloud-platform"]
        )
        session = google.auth.transport.requests.AuthorizedSession(credentials)
        response = session.get(uri, timeout=deadline)
    except GoogleAuthError as exc:
        raise TemplateError(f"template {uri}: no credentials to read it: {exc}") from None
    except Exception as exc:  # requests' connection errors: transient
        raise BackendUnavailable(f"template {uri} could not be fetched: {exc}") from None
    if response.status_code in (429, 500, 502, 503, 504):
        raise BackendUnavailable(f"template {uri}: HTTP {response.status_code}")
    if response.status_code != 200:
        raise TemplateError(f"template {uri}: HTTP {response.status_code}")
    if len(response.content) > MAX_TEMPLATE_BYTES:
        raise TemplateError(f"template {uri} is larger than {MAX_TEMPLATE_BYTES} bytes")
    return bytes(response.content)


class TemplateCache:
    """Reads each template URI once per process (per instance, on Cloud Functions), and checks
    each route's parameters against the template it starts, once per (route, template).

    Two ways to ask for a route's template, one per moment:

    - :meth:`check` at start-up (``Service.from_config``, ``retrain-trigger check``): a template
      that cannot be read or does not fit the route's parameters is a :class:`ConfigError`
      naming the file and the route's field;
    - :meth:`for_route` while deciding an event (``rules.plan``): the same problem is a
      :class:`TemplateError` (the submission is refused until an operator acts), with the same
      text.
    """

    def __init__(
        self, base_dir: str = "", *, deadline: float = READ_DEADLINE, source: str = ""
    ) -> None:
        self._base_dir = base_dir
        self.deadline = deadline
        self.source = source
        self._lock = threading.Lock()
        self._templates: dict[str, PipelineTemplate] = {}
        self._checked: set[tuple[str, str]] = set()

    @classmethod
    def for_config(cls, config: Config) -> TemplateCache:
        """Relative template paths resolve next to the configuration file."""
        base_dir = os.path.dirname(os.path.abspath(config.source)) if config.source else ""
        return cls(base_dir, deadline=config.submit_deadline_seconds, source=config.source)

    def resolve(self, uri: str) -> str:
        if "://" in uri or os.path.isabs(uri) or not self._base_dir:
            return uri
        candidate = os.path.join(self._base_dir, uri)
        return candidate if os.path.exists(candidate) or not os.path.exists(uri) else uri

    def get(self, uri: str) -> PipelineTemplate:
        with self._lock:
            cached = self._templates.get(uri)
        if cached is not None:
            return cached
        template = parse_template(
            read_template_bytes(self.resolve(uri), deadline=self.deadline), uri
        )
        with self._lock:
            return self._templates.setdefault(uri, template)

    def peek(self, uri: str) -> PipelineTemplate | None:
        with self._lock:
            return self._templates.get(uri)

    def clear(self) -> None:
        with self._lock:
            self._templates.clear()
            self._checked.clear()

    def check(self, route: Route, uri: str = "") -> PipelineTemplate:
        """The route's template (``uri`` or its own), with the parameter names and fixed values
        checked against ``root.inputDefinitions``. Raises :class:`ConfigError`."""
        uri = uri or route.template
        try:
            template = self.get(uri)
        except TemplateError as exc:
            raise ConfigError(
                str(exc), source=self.source, field=f"{route.where}.template"
            ) from None
        if (route.name, uri) in self._checked:
            return template
        where = f"{route.where}.parameters"
        try:
            template.check_names(set(route.parameters))
            fixed = {
                k: v for k, v in route.parameters.items() if not (isinstance(v, str) and "{" in v)
            }
            template.coerce(fixed, complete=False)
            _check_placeholders(template, route.parameters)
        except ConfigError as exc:
            raise exc.located(source=self.source, field=where) from None
        except Unprocessable as exc:
            raise ConfigError(str(exc), source=self.source, field=where) from None
        with self._lock:
            self._checked.add((route.name, uri))
        return template

    def for_route(self, route: Route, uri: str = "") -> PipelineTemplate:
        """:meth:`check` while deciding an event: a template that cannot be read or does not fit
        is a :class:`TemplateError` (an operator must act; the event is redelivered)."""
        try:
            return self.check(route, uri)
        except ConfigError as exc:
            raise TemplateError(str(exc)) from None


def _check_placeholders(template: PipelineTemplate, parameters: Mapping[str, Any]) -> None:
    """A ``{placeholder}`` value that can never convert to its parameter's type is refused when the
    configuration is checked, not on every event."""
    from retrain_trigger.checks import placeholder_problem

    for name, value in parameters.items():
        param = template.inputs.get(name)
        problem = (
            placeholder_problem(name, param.type, value)
            if param is not None and isinstance(value, str)
            else ""
        )
        if problem:
            raise Unprocessable(problem)


def read_template_bytes(uri: str, *, deadline: float = READ_DEADLINE) -> bytes:
    """The template's bytes; a remote read, retries included, takes about ``deadline`` at most."""
    if uri.startswith("gs://"):
        return _read_gcs(uri, deadline)
    if uri.startswith("https://"):
        return _read_https(uri, deadline)
    if uri.startswith("http://"):
        raise TemplateError(f"template {uri}: plain http is not allowed")
    return _read_local(uri)
