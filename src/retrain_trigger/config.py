"""Configuration: one YAML file, validated once into one typed, frozen object.

The file's path is ``RETRAIN_CONFIG`` (default ``retrain.yaml`` in the working directory). Its
fields are declared in :mod:`retrain_trigger.schema` (types, defaults, bounds, choices: msgspec
checks them, and ``retrain.schema.json`` is generated from them); environment settings are
declared in :mod:`retrain_trigger.settings`, each with the field it overrides; the command line's
global options reach :func:`load_config` as ``overrides``. An empty string means "unset".

:func:`parse_config` reads in this order, and the first problem found is the one reported, naming
the file, the field (one notation: ``routes[0] (churn).data.include[1]``) and the problem: the
environment's values, every field but the routes (declared), what those fields mean together,
then each route (declared, then what its fields mean together), then the routes together (names,
the loop guard, what Cloud Run cannot do).

(Above ~400 lines on purpose: the frozen objects the rest of the core reads and the checks that
build them from the declared file, kept together so each field's meaning is read where it is made.
The objects are frozen msgspec Structs, not dataclasses: a cold start builds their classes in a
tenth of a millisecond instead of several.)
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from msgspec import Struct, field

from retrain_trigger import loopguard
from retrain_trigger.checks import glob_problem, marker_problem, route_warnings
from retrain_trigger.errors import ConfigError
from retrain_trigger.events import uri_problem

if TYPE_CHECKING:
    import msgspec

DEFAULT_CONFIG_PATH = "retrain.yaml"
MAX_CONFIG_BYTES = 1 << 20

_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,127}$")
_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$|^[a-z0-9.:-]{1,100}$")
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
_EMAIL = re.compile(r"^[^@\s,]+@[^@\s,]+$")
_FIELD = re.compile(r"{([^{}]*)}")
DEFAULT_CLOUD_BUILD_TOPIC = "cloud-builds"
# Mappings of the file whose null values mean "unset" (a null parameter or label is kept).
_SECTIONS = ("auth", "limits", "local", "history")

# Fields a parameter template may use. Keep in sync with rules.template_fields().
TEMPLATE_FIELDS = frozenset(
    {
        "data_uri",
        "bucket",
        "object",
        "generation",
        "size",
        "commit_sha",
        "image_uri",
        "build_id",
        "branch",
        "model_uri",
        "event_id",
        "event_time",
        "kind",
        "run_key",
        "route",
        "manifest_uri",
        "nonce",
        "project",
        "region",
        "pipeline_root",
    }
)


class DataRule(Struct, frozen=True, kw_only=True):
    """When a GCS object in ``bucket`` starts a run of a route."""

    bucket: str
    include: tuple[str, ...] = ("**",)
    exclude: tuple[str, ...] = ()
    mode: str = "object"
    marker: str = "_SUCCESS"
    uri: str = ""
    min_size: int = 1
    quiet_seconds: int = 300
    max_wait_seconds: int = 3600

    @property
    def dataset_uri(self) -> str:
        """The route's dataset: ``uri`` when set, else the literal prefix of the first include."""
        if self.uri:
            return self.uri
        return f"gs://{self.bucket}/{loopguard.literal_prefix(self.include[0])}"


class Route(Struct, frozen=True, kw_only=True):
    name: str
    template: str
    pipeline_root: str
    parameters: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    service_account: str = ""
    display_name: str = "{route}-{kind}"
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    network: str = ""
    encryption_key: str = ""
    data: DataRule | None = None
    code: bool = False
    model: bool = False
    allowed_templates: tuple[str, ...] = ()
    concurrency: str = "allow"
    writes: tuple[str, ...] | None = None
    # Where the route is in the file (``routes[<index>]``), for messages naming its fields.
    index: int = 0
    # Every gs:// location the route's pipeline writes to, with where it comes from (the loop
    # guard): the pipeline root, ``writes``, or (without ``writes``) fixed gs:// parameters.
    written: tuple[tuple[str, str], ...] = ()

    @property
    def where(self) -> str:
        """The route in field paths: ``routes[0] (mnist)``."""
        return f"routes[{self.index}] ({self.name})"

    def accepts(self, kind: str) -> bool:
        if kind == "data":
            return self.data is not None
        return bool(getattr(self, kind, False))


class AuthConfig(Struct, frozen=True, kw_only=True):
    mode: str = "iam"
    audience: str = ""
    allowed_invokers: tuple[str, ...] = ()
    hmac_secret: str = ""
    force_none: bool = False

    def __repr__(self) -> str:  # never the secret
        secret = ", hmac_secret=<set>" if self.hmac_secret else ""
        return (
            f"AuthConfig(mode={self.mode!r}, audience={self.audience!r}, "
            f"allowed_invokers={self.allowed_invokers!r}{secret}, force_none={self.force_none!r})"
        )


class Config(Struct, frozen=True, kw_only=True):
    routes: tuple[Route, ...]
    project: str = ""
    region: str = "us-central1"
    backend: str = "vertex"
    vertex_endpoint: str = ""
    auth: AuthConfig = field(default_factory=AuthConfig)
    max_body_bytes: int = 1 << 20
    submit_deadline_seconds: float = 30.0
    state_dir: str = ".local/state"
    local_concurrency: int = 1
    local_worker: bool = True
    store: str = "sqlite"
    firestore_database: str = "(default)"
    history: bool = False
    history_ttl_days: int = 30
    ignore_prefixes: tuple[str, ...] = ()
    cloud_build_topic: str = DEFAULT_CLOUD_BUILD_TOPIC
    outcome_topic: str = ""
    notification_topic: str = ""
    run_check_after_seconds: int = 3600
    source: str = ""
    warnings: tuple[str, ...] = ()

    def route(self, name: str) -> Route | None:
        for route in self.routes:
            if route.name == name:
                return route
        return None


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, str | None] | None = None,
) -> Config:
    """Read, validate and freeze the configuration.

    ``env`` defaults to ``os.environ``; ``overrides`` (the command line's global options) are
    settings by variable name that win over it. ``path`` defaults to the ``RETRAIN_CONFIG``
    setting, then ``retrain.yaml``.
    """
    from retrain_trigger import settings

    merged = dict(os.environ if env is None else env)
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    path = Path(path or settings.value(merged, "RETRAIN_CONFIG") or DEFAULT_CONFIG_PATH)
    source = str(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(
            "configuration file not found (set RETRAIN_CONFIG to its path)", source=source
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read configuration: {exc.strerror or exc}", source=source
        ) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"configuration is larger than {MAX_CONFIG_BYTES} bytes", source=source)
    return parse_config(raw, source=source, env=merged)


def parse_config(
    text: bytes | str, *, source: str = "<config>", env: Mapping[str, str] | None = None
) -> Config:
    import yaml

    env = {} if env is None else env
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"not valid YAML{where}: {problem}", source=source) from None
    except (RecursionError, ValueError) as exc:
        raise ConfigError(f"not valid YAML: {exc}", source=source) from None
    if data is None:
        raise ConfigError("configuration is empty", source=source)
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"must be a mapping, got {_type_name(data)}", source=source, field="(top level)"
        )
    return _Loader(source, env).load(data)


def _type_name(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}
    return names.get(type(value), type(value).__name__)


def _unset(mapping: Mapping[Any, Any]) -> dict[Any, Any]:
    """The mapping without its null values (``project:`` with nothing after it is unset)."""
    return {key: value for key, value in mapping.items() if value is not None}


class _Loader:
    """One reading of one file; every error names ``source`` and a field."""

    def __init__(self, source: str, env: Mapping[str, str]) -> None:
        self.source = source
        self.env = env
        self.from_env: dict[str, str] = {}  # field -> the variable that set it

    def error(self, message: str, field: str = "") -> ConfigError:
        setting = self.from_env.get(field)
        suffix = f" (from {setting})" if setting else ""
        return ConfigError(message + suffix, source=self.source, field=field)

    def problem(self, error: msgspec.ValidationError, data: Any) -> ConfigError:
        """The ConfigError of a conversion error, in the one field notation."""
        from retrain_trigger import schema, schema_errors

        where, message = schema_errors.problem(error, schema.ConfigFile, data)
        return self.error(message, where)

    def convert(self, data: Any, kind: type) -> Any:
        import msgspec

        try:
            return msgspec.convert(data, kind, strict=True)
        except msgspec.ValidationError as exc:
            raise self.problem(exc, data) from None

    def settings(self, top: Any) -> AuthConfig:
        """What the fields but the routes mean together; the authentication settings."""
        project, backend = str(top.project).strip(), top.backend.strip()
        if backend != "vertex":  # another backend must be installed (an entry point)
            from retrain_trigger.backends import check_backend

            if problem := check_backend(backend):
                raise self.error(problem, "backend")
        if project and not _PROJECT.match(project):
            raise self.error(f"is not a valid project id: {project!r}", "project")
        if backend == "vertex" and not project:
            raise self.error(
                "is required for the vertex backend (or set GOOGLE_CLOUD_PROJECT)", "project"
            )
        return self.auth(top.auth)

    def load(self, raw: Mapping[Any, Any]) -> Config:
        import msgspec

        from retrain_trigger import schema, settings

        data = _unset(raw)
        for section in _SECTIONS:
            if isinstance(data.get(section), Mapping):
                data[section] = _unset(data[section])
        try:
            overrides = settings.overrides(self.env)
        except ConfigError as exc:
            raise exc.located(source=f"environment ({self.source})") from None
        for path, (setting, value) in overrides.items():
            section, _, name = path.rpartition(".")
            if section:
                current = data.get(section)
                data[section] = {**(current if isinstance(current, Mapping) else {}), name: value}
            else:
                data[name] = value
            self.from_env[path] = setting.name
        routes_raw = data.get("routes")
        if isinstance(routes_raw, list):
            data["routes"] = [_route_data(item) for item in routes_raw]
        try:  # one conversion when the file is sound (the cold start pays for one decoder)
            spec = msgspec.convert(data, schema.ConfigFile, strict=True)
        except msgspec.ValidationError as exc:
            # The fields but the routes come first: find their problem, if any, then the routes'.
            top = self.convert({k: v for k, v in data.items() if k != "routes"}, schema.Settings)
            self.settings(top)
            if not isinstance(routes_raw, list) or not routes_raw:
                raise self.error("must be a non-empty list of routes", "routes") from None
            raise self.problem(exc, data) from None
        auth = self.settings(spec)
        routes = tuple(self.route(i, item) for i, item in enumerate(spec.routes))
        names = [r.name for r in routes]
        for name in names:
            if names.count(name) > 1:
                raise self.error(f"route name {name!r} is used twice", "routes")
        routes, warnings = loopguard.written_locations(self.source, routes)
        warnings = warnings + tuple(w for r in routes for w in route_warnings(self.source, r))
        project, backend = str(spec.project).strip(), spec.backend.strip()
        _refuse_local_store_on_cloud_run(self.source, spec.store, routes, self.env)
        enabled = spec.history.enabled
        return Config(
            routes=routes,
            project=project,
            region=spec.region,
            backend=backend,
            vertex_endpoint=spec.vertex_endpoint.strip(),
            auth=auth,
            max_body_bytes=spec.limits.max_body_bytes,
            submit_deadline_seconds=float(spec.limits.submit_deadline_seconds),
            state_dir=spec.local.state_dir.strip(),
            local_concurrency=spec.local.concurrency,
            local_worker=spec.local.worker,
            store=spec.store,
            firestore_database=spec.firestore_database.strip(),
            # Recorded by default where a shared store exists: locally, and with Firestore.
            history=(backend == "local" or spec.store == "firestore")
            if enabled is None
            else enabled,
            history_ttl_days=spec.history.ttl_days,
            ignore_prefixes=self.strings(spec.ignore_prefixes, "ignore_prefixes"),
            cloud_build_topic=spec.cloud_build_topic,
            outcome_topic=spec.outcome_topic.strip(),
            notification_topic=spec.notification_topic.strip(),
            run_check_after_seconds=spec.run_check_after_seconds,
            source=self.source,
            warnings=warnings,
        )

    def strings(self, value: list[str] | str, field: str) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if not all(item.strip() for item in items):
            raise self.error("must be a list of non-empty strings", field)
        return tuple(items)

    def auth(self, spec: Any) -> AuthConfig:
        invokers = tuple(
            v.strip() for v in self.strings(spec.allowed_invokers, "auth.allowed_invokers")
        )
        for email in invokers:
            if not _EMAIL.match(email):
                raise self.error(f"is not an email address: {email!r}", "auth.allowed_invokers")
        secret = spec.hmac_secret.strip()
        if spec.mode == "hmac" and len(secret) < 16:
            raise self.error(
                "hmac mode needs a secret of at least 16 characters (RETRAIN_HMAC_SECRET)",
                "auth.hmac_secret",
            )
        return AuthConfig(
            mode=spec.mode,
            audience=spec.audience.strip(),
            allowed_invokers=invokers,
            hmac_secret=secret,
            force_none=spec.allow_anonymous_on_cloud_run,
        )

    def route(self, index: int, spec: Any) -> Route:
        where = f"routes[{index}] ({spec.name})"
        template = spec.template.strip()
        if not template:
            raise self.error("is required", f"{where}.template")
        if not (template.startswith(("gs://", "https://")) or "://" not in template):
            raise self.error(
                "must be a local path, gs://... or https://... URI", f"{where}.template"
            )
        pipeline_root = spec.pipeline_root.strip()
        if not pipeline_root:
            raise self.error("is required", f"{where}.pipeline_root")
        if "://" in pipeline_root and not pipeline_root.startswith("gs://"):
            raise self.error("must be gs://bucket/path or a local folder", f"{where}.pipeline_root")
        for key, value in spec.parameters.items():
            if not _PARAM_NAME.match(key):
                raise self.error(
                    f"parameter name {key!r} is not a valid identifier", f"{where}.parameters"
                )
            for placeholder in _FIELD.findall(value) if isinstance(value, str) else ():
                if placeholder not in TEMPLATE_FIELDS:
                    raise self.error(
                        f"uses unknown field {{{placeholder}}}; known: "
                        f"{', '.join(sorted(TEMPLATE_FIELDS))}",
                        f"{where}.parameters.{key}",
                    )
        labels: dict[str, str] = {}
        for key, value in spec.labels.items():
            text = "" if value is None else str(value)
            if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(text):
                raise self.error(
                    f"label {key!r}: {text!r} breaks Vertex label rules (lowercase, 63 chars)",
                    f"{where}.labels",
                )
            labels[key] = text
        display_name = spec.display_name.strip()
        for placeholder in _FIELD.findall(display_name):
            if placeholder not in TEMPLATE_FIELDS:
                raise self.error(f"uses unknown field {{{placeholder}}}", f"{where}.display_name")
        route = Route(
            name=spec.name,
            template=template,
            pipeline_root=pipeline_root.rstrip("/"),
            parameters=MappingProxyType(dict(spec.parameters)),
            service_account=spec.service_account,
            display_name=display_name,
            labels=MappingProxyType(labels),
            network=spec.network.strip(),
            encryption_key=spec.encryption_key.strip(),
            data=self.data_rule(f"{where}.data", spec.data) if spec.data is not None else None,
            code=spec.code,
            model=spec.model,
            allowed_templates=self.strings(spec.allowed_templates, f"{where}.allowed_templates"),
            concurrency=spec.concurrency,
            writes=self.writes(f"{where}.writes", spec.writes),
            index=index,
        )
        if not (route.data or route.code or route.model):
            raise self.error("accepts no trigger: set data, code: true or model: true", where)
        for prefix in route.allowed_templates:
            problem = uri_problem(prefix)
            if problem or not prefix.split("://", 1)[1].partition("/")[2].strip("/"):
                raise self.error(
                    f"{prefix!r} must be a gs:// or https:// prefix naming at least a bucket or "
                    f"host and a folder{f' ({problem})' if problem else ''}; it is matched on '/' "
                    "boundaries",
                    f"{where}.allowed_templates",
                )
        return route

    def writes(self, where: str, value: list[str] | str | None) -> tuple[str, ...] | None:
        """``writes``: the gs:// locations the pipeline writes to (the loop guard), or None."""
        if value is None:
            return None
        writes = self.strings(value, where)
        for uri in writes:
            problem = uri_problem(uri)
            if problem or not uri.startswith("gs://"):
                raise self.error(
                    f"{uri!r} must be a gs://bucket[/folder] URI{f' ({problem})' if problem else ''}",
                    where,
                )
        return tuple(uri.rstrip("/") for uri in writes)

    def data_rule(self, where: str, spec: Any) -> DataRule:
        if ".." in spec.bucket:
            raise self.error(f"is not a valid bucket name: {spec.bucket!r}", f"{where}.bucket")
        include = self.strings(spec.include, f"{where}.include")
        exclude = self.strings(spec.exclude, f"{where}.exclude")
        for name, patterns in (("include", include), ("exclude", exclude)):
            for i, pattern in enumerate(patterns):
                if pattern.startswith("/") or len(pattern) > 1024:
                    raise self.error(
                        f"pattern {pattern!r} must be relative to the bucket",
                        f"{where}.{name}[{i}]",
                    )
                if problem := glob_problem(pattern, spec.bucket):
                    raise self.error(problem, f"{where}.{name}[{i}]")
        marker = spec.marker.strip()
        if not marker or "/" in marker:
            raise self.error("must be a file name without '/'", f"{where}.marker")
        if spec.mode == "marker" and (problem := marker_problem(marker, include, exclude)):
            raise self.error(problem, f"{where}.marker")
        uri = spec.uri.strip()
        if uri and not uri.startswith("gs://"):
            raise self.error("must be a gs:// URI", f"{where}.uri")
        if spec.max_wait_seconds < spec.quiet_seconds:
            raise self.error("must be at least quiet_seconds", f"{where}.max_wait_seconds")
        return DataRule(
            bucket=spec.bucket,
            include=include,
            exclude=exclude,
            mode=spec.mode,
            marker=marker,
            uri=uri,
            min_size=spec.min_size,
            quiet_seconds=spec.quiet_seconds,
            max_wait_seconds=spec.max_wait_seconds,
        )


def _route_data(item: Any) -> Any:
    """A route's mapping with its nulls unset; ``data: false`` or ``{}`` means no data rule."""
    if not isinstance(item, Mapping):
        return item
    route = _unset(item)
    if route.get("data") in (False, {}):
        del route["data"]
    if isinstance(route.get("data"), Mapping):
        route["data"] = _unset(route["data"])
    return route


def _refuse_local_store_on_cloud_run(
    source: str, store: str, routes: tuple[Route, ...], env: Mapping[str, str]
) -> None:
    """``store: sqlite`` keeps windows and run slots in one instance's file: on Cloud Run, where
    every instance has its own (and ``/flush`` reaches any one of them), batches would never close
    and concurrency policies would not hold."""
    if store != "sqlite" or not (env.get("K_SERVICE") or "").strip():
        return
    needing = [
        r.name
        for r in routes
        if r.concurrency != "allow" or (r.data is not None and r.data.mode == "window")
    ]
    if needing:
        raise ConfigError(
            f"route(s) {', '.join(needing)} use batch windows or a concurrency policy, whose "
            "state must be shared by every instance, but store sqlite is a file of this instance "
            "and K_SERVICE says this runs on Cloud Run: set store: firestore "
            "(or RETRAIN_STORE=firestore)",
            source=source,
            field="store",
        )
