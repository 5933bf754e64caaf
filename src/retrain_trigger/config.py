"""Configuration: one YAML file, validated once into one typed, frozen object.

The file's path is ``RETRAIN_CONFIG`` (default ``retrain.yaml`` in the working directory). A few
settings may be overridden from the environment; every one is listed in :data:`ENV_SETTINGS` and in
the README. An empty string means "unset". Every error names the file, the field and the problem.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from retrain_trigger.constants import BUCKET_NAME, ROUTE_NAME
from retrain_trigger.errors import ConfigError
from retrain_trigger.events import uri_problem

DEFAULT_CONFIG_PATH = "retrain.yaml"
MAX_CONFIG_BYTES = 1 << 20

AUTH_MODES = ("iam", "hmac", "none")
DATA_MODES = ("object", "marker", "window")
CONCURRENCY_POLICIES = ("allow", "skip_if_running", "queue_latest")
STORES = ("sqlite", "firestore")

# env var -> (config field, meaning). The README's settings table mirrors this.
ENV_SETTINGS: dict[str, tuple[str, str]] = {
    "RETRAIN_CONFIG": ("(path)", "path of the YAML configuration file"),
    "GOOGLE_CLOUD_PROJECT": ("project", "Google Cloud project of the pipeline jobs"),
    "RETRAIN_REGION": ("region", "Vertex AI region"),
    "RETRAIN_BACKEND": ("backend", "vertex or local"),
    "RETRAIN_VERTEX_ENDPOINT": ("vertex_endpoint", "Vertex API endpoint override"),
    "RETRAIN_AUTH": ("auth.mode", "iam, hmac or none"),
    "RETRAIN_AUDIENCE": ("auth.audience", "expected ID-token audience"),
    "RETRAIN_ALLOWED_INVOKERS": ("auth.allowed_invokers", "comma-separated caller emails"),
    "RETRAIN_HMAC_SECRET": ("auth.hmac_secret", "shared secret for hmac auth"),
    "RETRAIN_ID_TOKEN_CERTS_URL": ("(auth)", "certificates that verify ID tokens (tests only)"),
    "RETRAIN_ALLOW_ANONYMOUS_ON_CLOUD_RUN": ("auth.force_none", "let auth none run on Cloud Run"),
    "RETRAIN_MAX_BODY_BYTES": ("max_body_bytes", "largest accepted request body"),
    "RETRAIN_SUBMIT_DEADLINE": ("submit_deadline_seconds", "total time for one submit"),
    "RETRAIN_STATE_DIR": ("state_dir", "folder of local state (SQLite, run logs)"),
    "RETRAIN_LOCAL_CONCURRENCY": ("local_concurrency", "runs the local backend runs at once"),
    "RETRAIN_LOCAL_WORKER": ("local_worker", "run local pipelines in this process (true/false)"),
    "RETRAIN_STORE": ("store", "sqlite or firestore"),
    "RETRAIN_FIRESTORE_DATABASE": ("firestore_database", "Firestore database id"),
    "RETRAIN_HISTORY": ("history.enabled", "record every decision (true/false)"),
    "RETRAIN_HISTORY_TTL_DAYS": ("history.ttl_days", "days a recorded decision is kept"),
    "RETRAIN_CLOUD_BUILD_TOPIC": (
        "cloud_build_topic",
        "topic whose Cloud Build status messages the event function takes",
    ),
}

_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,127}$")
_SERVICE_ACCOUNT = re.compile(r"^[a-z][a-z0-9-]{4,62}@[a-z0-9.-]+\.iam\.gserviceaccount\.com$")
_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$|^[a-z0-9.:-]{1,100}$")
_REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]$")
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
_EMAIL = re.compile(r"^[^@\s,]+@[^@\s,]+$")
_FIELD = re.compile(r"{([^{}]*)}")
_TOPIC_ID = r"[A-Za-z][A-Za-z0-9_.~+%-]{2,254}"
_TOPIC = re.compile(rf"^{_TOPIC_ID}$|^projects/[a-z0-9.:-]{{1,100}}/topics/{_TOPIC_ID}$")
DEFAULT_CLOUD_BUILD_TOPIC = "cloud-builds"

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


@dataclass(frozen=True)
class DataRule:
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
        return f"gs://{self.bucket}/{literal_prefix(self.include[0])}"


@dataclass(frozen=True)
class Route:
    name: str
    template: str
    pipeline_root: str
    parameters: Mapping[str, str] = field(default_factory=dict)
    service_account: str = ""
    display_name: str = "{route}-{kind}"
    labels: Mapping[str, str] = field(default_factory=dict)
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


@dataclass(frozen=True)
class AuthConfig:
    mode: str = "iam"
    audience: str = ""
    allowed_invokers: tuple[str, ...] = ()
    hmac_secret: str = field(default="", repr=False)
    force_none: bool = False


@dataclass(frozen=True)
class Config:
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
    source: str = ""
    warnings: tuple[str, ...] = ()

    def route(self, name: str) -> Route | None:
        for route in self.routes:
            if route.name == name:
                return route
        return None


def under(uri: str, location: str) -> bool:
    """Whether ``uri`` is ``location`` or lies below it, on ``/`` boundaries:
    ``gs://b/models/v1`` is under ``gs://b/models``, ``gs://b/models-old/v1`` is not."""
    base = location.rstrip("/")
    return bool(base) and (uri == base or uri.startswith(base + "/"))


def literal_prefix(pattern: str) -> str:
    """The part of a glob before its first wildcard, cut back to the last ``/``."""
    cut = len(pattern)
    for char in "*?[":
        pos = pattern.find(char)
        if pos != -1:
            cut = min(cut, pos)
    prefix = pattern[:cut]
    if cut < len(pattern):
        prefix = prefix[: prefix.rfind("/") + 1]
    return prefix


class _Reader:
    """Validates one mapping from the file, naming each field by its dotted path."""

    def __init__(self, source: str, path: str, data: Any) -> None:
        self.source = source
        self.path = path
        if not isinstance(data, Mapping):
            raise self.error(f"must be a mapping, got {_type_name(data)}")
        self.data = data
        self.seen: set[str] = set()

    def error(self, message: str, key: str = "") -> ConfigError:
        name = f"{self.path}.{key}" if self.path and key else (key or self.path or "(top level)")
        return ConfigError(message, source=self.source, field=name)

    def get(self, key: str, default: Any = None) -> Any:
        self.seen.add(key)
        value = self.data.get(key, default)
        return default if value is None else value

    def string(self, key: str, default: str = "", *, required: bool = False) -> str:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.error(f"must be a string, got {_type_name(value)}", key)
        value = str(value).strip()
        if required and not value:
            raise self.error("is required", key)
        if len(value) > 4096:
            raise self.error("is longer than 4096 characters", key)
        return value

    def boolean(self, key: str, default: bool = False) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise self.error(f"must be true or false, got {value!r}", key)
        return value

    def integer(self, key: str, default: int, *, low: int, high: int) -> int:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(f"must be a whole number, got {value!r}", key)
        if not low <= value <= high:
            raise self.error(f"must be between {low} and {high}, got {value}", key)
        return value

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.string(key, default)
        if value not in choices:
            raise self.error(f"must be one of {', '.join(choices)}, got {value!r}", key)
        return value

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.get(key, list(default))
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error("must be a list of non-empty strings", key)
        return tuple(value)

    def mapping(self, key: str) -> Mapping[str, Any]:
        value = self.get(key, {})
        if not isinstance(value, Mapping):
            raise self.error(f"must be a mapping, got {_type_name(value)}", key)
        return value

    def reject_unknown(self, allowed: set[str]) -> None:
        unknown = sorted(set(map(str, self.data)) - allowed)
        if unknown:
            raise self.error(
                f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}"
            )


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _env(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip()


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Read, validate and freeze the configuration.

    ``path`` defaults to ``$RETRAIN_CONFIG`` or ``retrain.yaml``; ``env`` to ``os.environ``.
    """
    env = os.environ if env is None else env
    path = Path(path or _env(env, "RETRAIN_CONFIG") or DEFAULT_CONFIG_PATH)
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
    return parse_config(raw, source=source, env=env)


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
    return _build(_Reader(source, "", data), env)


def _build(top: _Reader, env: Mapping[str, str]) -> Config:
    source = top.source
    project = _env(env, "GOOGLE_CLOUD_PROJECT") or top.string("project")
    region = _env(env, "RETRAIN_REGION") or top.string("region", "us-central1")
    backend = _env(env, "RETRAIN_BACKEND") or top.string("backend", "vertex")
    if backend != "vertex":  # another backend must be installed (an entry point): see backends
        from retrain_trigger.backends import check_backend

        if problem := check_backend(backend):
            raise ConfigError(problem, source=source, field="backend")
    if project and not _PROJECT.match(project):
        raise ConfigError(f"is not a valid project id: {project!r}", source=source, field="project")
    if not _REGION.match(region):
        raise ConfigError(f"is not a valid region: {region!r}", source=source, field="region")
    if backend == "vertex" and not project:
        raise ConfigError(
            "is required for the vertex backend (or set GOOGLE_CLOUD_PROJECT)",
            source=source,
            field="project",
        )

    endpoint = _env(env, "RETRAIN_VERTEX_ENDPOINT") or top.string("vertex_endpoint")
    if endpoint and not re.match(r"^(https?://)?[A-Za-z0-9.-]+(:\d{1,5})?/?$", endpoint):
        raise ConfigError(
            f"must be host[:port] or http(s)://host[:port], got {endpoint!r}",
            source=source,
            field="vertex_endpoint",
        )

    auth = _auth(top, env)
    limits = _Reader(source, "limits", top.mapping("limits"))
    max_body = _int_env(env, "RETRAIN_MAX_BODY_BYTES", source) or limits.integer(
        "max_body_bytes", 1 << 20, low=1024, high=32 << 20
    )
    deadline = _float_env(env, "RETRAIN_SUBMIT_DEADLINE", source) or float(
        limits.integer("submit_deadline_seconds", 30, low=1, high=540)
    )
    limits.reject_unknown({"max_body_bytes", "submit_deadline_seconds"})

    local = _Reader(source, "local", top.mapping("local"))
    state_dir = _env(env, "RETRAIN_STATE_DIR") or local.string("state_dir", ".local/state")
    concurrency = _int_env(env, "RETRAIN_LOCAL_CONCURRENCY", source) or local.integer(
        "concurrency", 1, low=1, high=64
    )
    worker_env = _env(env, "RETRAIN_LOCAL_WORKER").lower()
    if worker_env not in ("", "true", "false"):
        raise ConfigError(
            f"must be true or false, got {worker_env!r}",
            source=source,
            field="RETRAIN_LOCAL_WORKER",
        )
    local_worker = worker_env == "true" if worker_env else local.boolean("worker", True)
    local.reject_unknown({"state_dir", "concurrency", "worker"})

    store = _env(env, "RETRAIN_STORE") or top.string("store", "sqlite")
    if store not in STORES:
        raise ConfigError(
            f"must be one of {', '.join(STORES)}, got {store!r}", source=source, field="store"
        )
    firestore_db = _env(env, "RETRAIN_FIRESTORE_DATABASE") or top.string(
        "firestore_database", "(default)"
    )

    history_reader = _Reader(source, "history", top.mapping("history"))
    history_env = _env(env, "RETRAIN_HISTORY").lower()
    if history_env not in ("", "true", "false"):
        raise ConfigError(
            f"must be true or false, got {history_env!r}", source=source, field="RETRAIN_HISTORY"
        )
    # Recorded by default where a shared store exists: locally, and with Firestore.
    history_default = backend == "local" or store == "firestore"
    history = (
        history_env == "true" if history_env else history_reader.boolean("enabled", history_default)
    )
    ttl_days = _int_env(env, "RETRAIN_HISTORY_TTL_DAYS", source) or history_reader.integer(
        "ttl_days", 30, low=1, high=3650
    )
    history_reader.reject_unknown({"enabled", "ttl_days"})

    routes_raw = top.get("routes")
    if not isinstance(routes_raw, list) or not routes_raw:
        raise top.error("must be a non-empty list of routes", "routes")
    routes = tuple(_route(source, i, item) for i, item in enumerate(routes_raw))
    names = [r.name for r in routes]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"route name {name!r} is used twice", source=source, field="routes")
    ignore = top.strings("ignore_prefixes")
    build_topic = _env(env, "RETRAIN_CLOUD_BUILD_TOPIC") or top.string(
        "cloud_build_topic", DEFAULT_CLOUD_BUILD_TOPIC
    )
    if not _TOPIC.match(build_topic):
        raise ConfigError(
            f"must be a topic id or projects/<project>/topics/<topic>, got {build_topic!r}",
            source=source,
            field="cloud_build_topic",
        )
    routes, warnings = _loop_guard(source, routes)
    _refuse_local_store_on_cloud_run(source, store, routes, env)
    top.reject_unknown(
        {
            "project",
            "region",
            "backend",
            "vertex_endpoint",
            "auth",
            "limits",
            "local",
            "store",
            "firestore_database",
            "routes",
            "ignore_prefixes",
            "history",
            "cloud_build_topic",
        }
    )
    return Config(
        routes=routes,
        project=project,
        region=region,
        backend=backend,
        vertex_endpoint=endpoint,
        auth=auth,
        max_body_bytes=max_body,
        submit_deadline_seconds=deadline,
        state_dir=state_dir,
        local_concurrency=concurrency,
        local_worker=local_worker,
        store=store,
        firestore_database=firestore_db,
        history=history,
        history_ttl_days=ttl_days,
        ignore_prefixes=ignore,
        cloud_build_topic=build_topic,
        source=source,
        warnings=warnings,
    )


def _refuse_local_store_on_cloud_run(
    source: str, store: str, routes: tuple[Route, ...], env: Mapping[str, str]
) -> None:
    """``store: sqlite`` keeps windows and run slots in one instance's file: on Cloud Run, where
    every instance has its own (and ``/flush`` reaches any one of them), batches would never close
    and concurrency policies would not hold."""
    if store != "sqlite" or not _env(env, "K_SERVICE"):
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


def _loop_guard(
    source: str, routes: tuple[Route, ...]
) -> tuple[tuple[Route, ...], tuple[str, ...]]:
    """Each route with ``written`` filled in, and warnings about data globs that see them.

    Without ``writes``, every fixed ``gs://`` parameter counts as written by the pipeline (a
    model registry, an export folder ...) unless it names a data source: a route's dataset or
    a folder holding one. A route's data may never lie wholly under a written location.
    """
    sources = [loc for route in routes for loc in _data_locations(route)]
    warnings: list[str] = []
    out = []
    for route in routes:
        written: list[tuple[str, str]] = []
        if route.pipeline_root.startswith("gs://"):
            written.append((route.pipeline_root, "pipeline_root"))
        if route.writes is not None:
            written += [(uri, "writes") for uri in route.writes]
        else:
            for name, value in route.parameters.items():
                if not isinstance(value, str) or not value.startswith("gs://") or "{" in value:
                    continue
                if any(under(loc, value) for loc in sources):
                    warnings.append(
                        f"route {route.name}: parameter {name} ({value}) holds a data source, so "
                        "it is not counted as written by the pipeline; if the pipeline writes "
                        "below it, list those folders under writes"
                    )
                    continue
                written.append((value, f"parameter {name}"))
        out.append(dataclasses.replace(route, written=tuple(dict.fromkeys(written))))
    for route in out:
        locations = _data_locations(route, includes_only=True)
        if not locations:
            continue
        dead = 0
        for location in locations:
            covering = ""
            for other in out:
                for uri, origin in other.written:
                    what = f"{uri} ({origin} of route {other.name})"
                    if under(location, uri):
                        covering = covering or what
                    elif under(uri, location):
                        warnings.append(
                            f"route {route.name}: its data globs can see {what}; objects there "
                            "never trigger (loop guard)"
                        )
            if covering:
                dead += 1
                warnings.append(
                    f"route {route.name}: data under {location} never triggers: it lies under "
                    f"{covering}, which the loop guard skips"
                )
        if dead == len(locations):
            raise ConfigError(
                "every object this route's data rule matches lies under a location its pipeline "
                "or another route's writes (see the loop guard in the README); move the data, "
                "or set writes to the folders the pipeline really writes",
                source=source,
                field=f"{route.where}.data",
            )
    return tuple(out), tuple(dict.fromkeys(warnings))


def _data_locations(route: Route, *, includes_only: bool = False) -> list[str]:
    """``gs://`` prefixes a route's data comes from: each include's literal prefix (and ``uri``)."""
    if route.data is None:
        return []
    rule = route.data
    locations = [f"gs://{rule.bucket}/{literal_prefix(p)}" for p in rule.include]
    if rule.uri and not includes_only:
        locations.append(rule.uri)
    return locations


def _int_env(env: Mapping[str, str], name: str, source: str) -> int:
    value = _env(env, name)
    if not value:
        return 0
    if not value.isdigit() or int(value) <= 0 or int(value) > 1 << 31:
        raise ConfigError(
            f"must be a positive whole number, got {value!r}",
            source=f"environment ({source})",
            field=name,
        )
    return int(value)


def _float_env(env: Mapping[str, str], name: str, source: str) -> float:
    value = _env(env, name)
    if not value:
        return 0.0
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 < number <= 3600:
        raise ConfigError(
            f"must be a number of seconds in (0, 3600], got {value!r}",
            source=f"environment ({source})",
            field=name,
        )
    return number


def _auth(top: _Reader, env: Mapping[str, str]) -> AuthConfig:
    reader = _Reader(top.source, "auth", top.mapping("auth"))
    mode = _env(env, "RETRAIN_AUTH") or reader.string("mode", "iam")
    if mode not in AUTH_MODES:
        raise ConfigError(
            f"must be one of {', '.join(AUTH_MODES)}, got {mode!r}",
            source=top.source,
            field="auth.mode",
        )
    audience = _env(env, "RETRAIN_AUDIENCE") or reader.string("audience")
    invokers_env = _env(env, "RETRAIN_ALLOWED_INVOKERS")
    invokers = (
        tuple(v.strip() for v in invokers_env.split(",") if v.strip())
        if invokers_env
        else reader.strings("allowed_invokers")
    )
    for email in invokers:
        if not _EMAIL.match(email):
            raise ConfigError(
                f"is not an email address: {email!r}",
                source=top.source,
                field="auth.allowed_invokers",
            )
    secret = _env(env, "RETRAIN_HMAC_SECRET") or reader.string("hmac_secret")
    if mode == "hmac" and len(secret) < 16:
        raise ConfigError(
            "hmac mode needs a secret of at least 16 characters (RETRAIN_HMAC_SECRET)",
            source=top.source,
            field="auth.hmac_secret",
        )
    force_env = _env(env, "RETRAIN_ALLOW_ANONYMOUS_ON_CLOUD_RUN").lower()
    if force_env not in ("", "true", "false", "1", "0"):
        raise ConfigError(
            f"must be true or false, got {force_env!r}",
            source=top.source,
            field="RETRAIN_ALLOW_ANONYMOUS_ON_CLOUD_RUN",
        )
    force = force_env in ("true", "1") or reader.boolean("allow_anonymous_on_cloud_run")
    reader.reject_unknown(
        {"mode", "audience", "allowed_invokers", "hmac_secret", "allow_anonymous_on_cloud_run"}
    )
    return AuthConfig(
        mode=mode,
        audience=audience,
        allowed_invokers=invokers,
        hmac_secret=secret,
        force_none=force,
    )


def _route(source: str, index: int, item: Any) -> Route:
    reader = _Reader(source, f"routes[{index}]", item)
    name = reader.string("name", required=True)
    reader.path = f"routes[{index}] ({name})"
    if not ROUTE_NAME.match(name):
        raise reader.error(
            "must be 1-30 characters of a-z, 0-9 and '-', starting with a letter", "name"
        )
    template = reader.string("template", required=True)
    if not (template.startswith(("gs://", "https://")) or "://" not in template):
        raise reader.error("must be a local path, gs://... or https://... URI", "template")
    pipeline_root = reader.string("pipeline_root", required=True)
    if "://" in pipeline_root and not pipeline_root.startswith("gs://"):
        raise reader.error("must be gs://bucket/path or a local folder", "pipeline_root")
    service_account = reader.string("service_account")
    if service_account and not _SERVICE_ACCOUNT.match(service_account):
        raise reader.error(
            f"is not a service account email: {service_account!r}", "service_account"
        )

    params_raw = reader.mapping("parameters")
    parameters: dict[str, Any] = {}
    for key, value in params_raw.items():
        if not isinstance(key, str) or not _PARAM_NAME.match(key):
            raise reader.error(f"parameter name {key!r} is not a valid identifier", "parameters")
        if isinstance(value, Mapping | list):
            raise reader.error("must be a string, number or boolean", f"parameters.{key}")
        if isinstance(value, str):
            for placeholder in _FIELD.findall(value):
                if placeholder not in TEMPLATE_FIELDS:
                    raise reader.error(
                        f"uses unknown field {{{placeholder}}}; known: {', '.join(sorted(TEMPLATE_FIELDS))}",
                        f"parameters.{key}",
                    )
        parameters[key] = value

    labels_raw = reader.mapping("labels")
    labels: dict[str, str] = {}
    for key, value in labels_raw.items():
        value = "" if value is None else str(value)
        if not isinstance(key, str) or not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
            raise reader.error(
                f"label {key!r}: {value!r} breaks Vertex label rules (lowercase, 63 chars)",
                "labels",
            )
        labels[key] = value

    display_name = reader.string("display_name", "{route}-{kind}")
    for placeholder in _FIELD.findall(display_name):
        if placeholder not in TEMPLATE_FIELDS:
            raise reader.error(f"uses unknown field {{{placeholder}}}", "display_name")

    data = None
    if reader.get("data") not in (None, False, {}):
        data = _data_rule(reader, reader.get("data"))
    concurrency = reader.choice("concurrency", "allow", CONCURRENCY_POLICIES)
    route = Route(
        name=name,
        template=template,
        pipeline_root=pipeline_root.rstrip("/"),
        parameters=MappingProxyType(parameters),
        service_account=service_account,
        display_name=display_name,
        labels=MappingProxyType(labels),
        network=reader.string("network"),
        encryption_key=reader.string("encryption_key"),
        data=data,
        code=reader.boolean("code", False),
        model=reader.boolean("model", False),
        allowed_templates=reader.strings("allowed_templates"),
        concurrency=concurrency,
        writes=_writes(reader),
        index=index,
    )
    reader.reject_unknown(
        {
            "name",
            "template",
            "pipeline_root",
            "service_account",
            "parameters",
            "labels",
            "display_name",
            "network",
            "encryption_key",
            "data",
            "code",
            "model",
            "allowed_templates",
            "concurrency",
            "writes",
        }
    )
    if not (route.data or route.code or route.model):
        raise reader.error("accepts no trigger: set data, code: true or model: true")
    for prefix in route.allowed_templates:
        problem = uri_problem(prefix)
        if problem or not prefix.split("://", 1)[1].partition("/")[2].strip("/"):
            raise reader.error(
                f"{prefix!r} must be a gs:// or https:// prefix naming at least a bucket or host "
                f"and a folder{f' ({problem})' if problem else ''}; it is matched on '/' "
                "boundaries",
                "allowed_templates",
            )
    return route


def _writes(reader: _Reader) -> tuple[str, ...] | None:
    """``writes``: the gs:// locations the pipeline writes to (the loop guard), or None (infer)."""
    if reader.data.get("writes") is None:
        reader.seen.add("writes")
        return None
    writes = reader.strings("writes")
    for uri in writes:
        problem = uri_problem(uri)
        if problem or not uri.startswith("gs://"):
            raise reader.error(
                f"{uri!r} must be a gs://bucket[/folder] URI{f' ({problem})' if problem else ''}",
                "writes",
            )
    return tuple(uri.rstrip("/") for uri in writes)


def _data_rule(route: _Reader, raw: Any) -> DataRule:
    reader = _Reader(route.source, f"{route.path}.data", raw)
    bucket = reader.string("bucket", required=True)
    if not BUCKET_NAME.match(bucket) or ".." in bucket:
        raise reader.error(f"is not a valid bucket name: {bucket!r}", "bucket")
    include = reader.strings("include", ("**",))
    exclude = reader.strings("exclude")
    for pattern in include + exclude:
        if pattern.startswith("/") or len(pattern) > 1024:
            raise reader.error(f"pattern {pattern!r} must be relative to the bucket", "include")
    mode = reader.choice("mode", "object", DATA_MODES)
    marker = reader.string("marker", "_SUCCESS")
    if not marker or "/" in marker:
        raise reader.error("must be a file name without '/'", "marker")
    uri = reader.string("uri")
    if uri and not uri.startswith("gs://"):
        raise reader.error("must be a gs:// URI", "uri")
    rule = DataRule(
        bucket=bucket,
        include=include,
        exclude=exclude,
        mode=mode,
        marker=marker,
        uri=uri,
        min_size=reader.integer("min_size", 1, low=0, high=1 << 50),
        quiet_seconds=reader.integer("quiet_seconds", 300, low=1, high=7 * 86400),
        max_wait_seconds=reader.integer("max_wait_seconds", 3600, low=1, high=7 * 86400),
    )
    if rule.max_wait_seconds < rule.quiet_seconds:
        raise reader.error("must be at least quiet_seconds", "max_wait_seconds")
    reader.reject_unknown(
        {
            "bucket",
            "include",
            "exclude",
            "mode",
            "marker",
            "uri",
            "min_size",
            "quiet_seconds",
            "max_wait_seconds",
        }
    )
    return rule
