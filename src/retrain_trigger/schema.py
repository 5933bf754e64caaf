"""retrain.yaml, declared: every field with its type, default, bounds and meaning (msgspec).

The structs below are the file's schema, and only that: ``config.parse_config`` converts the YAML
into them (types, bounds, choices, patterns and unknown fields are checked here, declaratively),
then checks what one field cannot say alone and builds the frozen :class:`~retrain_trigger.config.Config`.
``retrain.schema.json`` at the repository's root is :func:`json_schema` written out
(``python -m retrain_trigger.schema > retrain.schema.json``; a test keeps it up to date), for
editors: ``# yaml-language-server: $schema=retrain.schema.json``.

Why msgspec (over pydantic, both measured against the skipped-event cold start; README,
Configuration): it imports in a few milliseconds and converts this file in microseconds, where
pydantic's import alone costs a function's cold start tens of milliseconds more.

:func:`retrain_trigger.schema_errors.problem` turns a msgspec ``ValidationError`` into this
project's one notation: the field path (``routes[0] (churn).data.include[1]``) and a message made
from the field's declaration, never from the library's wording (imported only when a file has a
problem: a sound file's cold start does not pay for it).

"""

# No ``from __future__ import annotations`` here: msgspec would evaluate every field's annotation
# from its text on the first conversion (about 5 ms of a cold start).
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct, field

from retrain_trigger.constants import BUCKET_NAME, ROUTE_NAME, ROUTE_NAME_TEXT

_TOPIC_ID = r"[A-Za-z][A-Za-z0-9_.~+%-]{2,254}"
MAX_TEXT = 4096


# A string field's value is at most this long; a pattern's ``problem`` is what an error says of
# another value (``{value}`` is that value).
Strings = list[str] | str  # a list of strings, or one string for a list of one
Scalar = str | int | float | bool


class Base(Struct, forbid_unknown_fields=True, kw_only=True):
    """Every mapping of the file: unknown fields are refused (with a "did you mean")."""


class DataSpec(Base):
    bucket: Annotated[
        str,
        Meta(
            pattern=BUCKET_NAME.pattern,
            description="bucket whose new objects trigger",
            extra={"problem": "is not a valid bucket name: {value}"},
        ),
    ]
    include: Annotated[
        Strings, Meta(description="globs over object names: ** crosses folders, * and ? do not")
    ] = field(default_factory=lambda: ["**"])
    exclude: Annotated[Strings, Meta(description="globs of objects that never trigger")] = field(
        default_factory=list
    )
    mode: Annotated[
        Literal["object", "marker", "window"],
        Meta(description="object: a run per object; marker: per marker file; window: per batch"),
    ] = "object"
    marker: Annotated[
        str, Meta(max_length=MAX_TEXT, description="marker file name for marker mode")
    ] = "_SUCCESS"
    uri: Annotated[
        str,
        Meta(
            max_length=MAX_TEXT,
            description="the route's dataset (default: the literal prefix of the first include)",
        ),
    ] = ""
    min_size: Annotated[
        int, Meta(ge=0, le=1 << 50, description="smaller objects are skipped (markers are not)")
    ] = 1
    quiet_seconds: Annotated[
        int, Meta(ge=1, le=7 * 86400, description="a window closes when quiet this long")
    ] = 300
    max_wait_seconds: Annotated[
        int, Meta(ge=1, le=7 * 86400, description="... or when open this long")
    ] = 3600


class RouteSpec(Base):
    name: Annotated[
        str,
        Meta(
            pattern=ROUTE_NAME.pattern,
            description="first part of every job id",
            extra={"problem": f"must be {ROUTE_NAME_TEXT}, got {{value}}"},
        ),
    ]
    template: Annotated[
        str,
        Meta(
            max_length=MAX_TEXT,
            description="compiled pipeline YAML: a local path (relative to this file), gs://... "
            "or https://<region>-kfp.pkg.dev/...",
        ),
    ]
    pipeline_root: Annotated[
        str,
        Meta(
            max_length=MAX_TEXT,
            description="gs:// root for the runs' artifacts (never triggers: loop guard)",
        ),
    ]
    parameters: Annotated[
        dict[str, Scalar],
        Meta(
            description="pipeline parameter -> fixed value, or a string with {field} placeholders"
        ),
    ] = field(default_factory=dict)
    service_account: Annotated[
        str,
        Meta(
            pattern=r"^$|^[a-z][a-z0-9-]{4,62}@[a-z0-9.-]+\.iam\.gserviceaccount\.com$",
            description="the pipeline's service account (default: the project's default)",
            extra={"problem": "is not a service account email: {value}"},
        ),
    ] = ""
    display_name: Annotated[str, Meta(max_length=MAX_TEXT, description="display name template")] = (
        "{route}-{kind}"
    )
    labels: Annotated[
        dict[str, Scalar | None],
        Meta(description="extra Vertex labels (lowercase, at most 63 characters)"),
    ] = field(default_factory=dict)
    network: Annotated[str, Meta(max_length=MAX_TEXT, description="PipelineJob network")] = ""
    encryption_key: Annotated[
        str, Meta(max_length=MAX_TEXT, description="PipelineJob CMEK key")
    ] = ""
    data: Annotated[DataSpec | None, Meta(description="data-change trigger; omit to disable")] = (
        None
    )
    code: Annotated[bool, Meta(description="accept code changes over HTTP")] = False
    model: Annotated[bool, Meta(description="accept model changes over HTTP")] = False
    allowed_templates: Annotated[
        Strings,
        Meta(description="gs:// or https:// prefixes a code build may name as its template"),
    ] = field(default_factory=list)
    concurrency: Annotated[
        Literal["allow", "skip_if_running", "queue_latest"],
        Meta(description="allow, skip_if_running or queue_latest"),
    ] = "allow"
    writes: Annotated[
        Strings | None,
        Meta(description="gs:// locations the pipeline writes besides its root (loop guard)"),
    ] = None


class AuthSpec(Base):
    mode: Annotated[Literal["iam", "hmac", "none"], Meta(description="iam, hmac or none")] = "iam"
    audience: Annotated[
        str,
        Meta(max_length=MAX_TEXT, description="expected ID-token audience (default: the URL)"),
    ] = ""
    allowed_invokers: Annotated[Strings, Meta(description="caller emails allowed to trigger")] = (
        field(default_factory=list)
    )
    hmac_secret: Annotated[
        str,
        Meta(
            max_length=MAX_TEXT,
            description="shared secret for hmac (16+ characters); give it as RETRAIN_HMAC_SECRET",
        ),
    ] = ""
    allow_anonymous_on_cloud_run: Annotated[
        bool, Meta(description="let mode none run where K_SERVICE is set")
    ] = False


class LimitsSpec(Base):
    max_body_bytes: Annotated[
        int, Meta(ge=1024, le=32 << 20, description="largest request body or event payload")
    ] = 1 << 20
    submit_deadline_seconds: Annotated[
        float,
        Meta(gt=0, le=540, description="total time one submission may take, retries included"),
    ] = 30.0


class LocalSpec(Base):
    state_dir: Annotated[
        str,
        Meta(
            max_length=MAX_TEXT,
            description="SQLite ledger, run folders and logs of the local backend and store",
        ),
    ] = ".local/state"
    concurrency: Annotated[
        int, Meta(ge=1, le=64, description="runs the local backend executes at once")
    ] = 1
    worker: Annotated[
        bool, Meta(description="whether a process that submits local runs also executes them")
    ] = True


class HistorySpec(Base):
    enabled: Annotated[
        bool | None,
        Meta(description="record every decision (default: on for local or firestore)"),
    ] = None
    ttl_days: Annotated[
        int, Meta(ge=1, le=3650, description="how long a recorded decision is kept")
    ] = 30


class Settings(Base):
    """Everything of retrain.yaml but its routes (read first, so its errors come first)."""

    project: Annotated[
        str | int, Meta(description="project of the pipeline jobs (required for vertex)")
    ] = ""
    region: Annotated[
        str,
        Meta(
            pattern=r"^[a-z]+-[a-z]+[0-9]$",
            description="Vertex AI region",
            extra={"problem": "is not a valid region: {value}"},
        ),
    ] = "us-central1"
    backend: Annotated[
        str, Meta(max_length=MAX_TEXT, description="vertex, or an installed backend (local)")
    ] = "vertex"
    vertex_endpoint: Annotated[
        str,
        Meta(
            pattern=r"^$|^(https?://)?[A-Za-z0-9.-]+(:\d{1,5})?/?$",
            description="host[:port], or http://host:port for a local test server",
            extra={"problem": "must be host[:port] or http(s)://host[:port], got {value}"},
        ),
    ] = ""
    auth: AuthSpec = field(default_factory=AuthSpec)
    limits: LimitsSpec = field(default_factory=LimitsSpec)
    local: LocalSpec = field(default_factory=LocalSpec)
    store: Annotated[
        Literal["sqlite", "firestore"],
        Meta(description="state store for windows, queues and decision history"),
    ] = "sqlite"
    firestore_database: Annotated[
        str, Meta(max_length=MAX_TEXT, description="Firestore database id")
    ] = "(default)"
    history: HistorySpec = field(default_factory=HistorySpec)
    ignore_prefixes: Annotated[Strings, Meta(description="gs:// prefixes that never trigger")] = (
        field(default_factory=list)
    )
    cloud_build_topic: Annotated[
        str,
        Meta(
            pattern=rf"^{_TOPIC_ID}$|^projects/[a-z0-9.:-]{{1,100}}/topics/{_TOPIC_ID}$",
            description="topic whose Cloud Build status messages the event function takes",
            extra={
                "problem": "must be a topic id or projects/<project>/topics/<topic>, got {value}"
            },
        ),
    ] = "cloud-builds"
    # -- run outcomes
    outcome_topic: Annotated[
        str,
        Meta(
            pattern=rf"^$|^projects/[a-z0-9.:-]{{1,100}}/topics/{_TOPIC_ID}$",
            description="topic (projects/<p>/topics/<t>) whose messages are run outcomes and "
            "champion reports; empty: none",
            extra={"problem": "must be projects/<project>/topics/<topic>, got {value}"},
        ),
    ] = ""
    notification_topic: Annotated[
        str,
        Meta(
            pattern=rf"^$|^projects/[a-z0-9.:-]{{1,100}}/topics/{_TOPIC_ID}$",
            description="topic (projects/<p>/topics/<t>) the trigger publishes run-ended and "
            "champion-changed notifications to; empty: none",
            extra={"problem": "must be projects/<project>/topics/<topic>, got {value}"},
        ),
    ] = ""
    run_check_after_seconds: Annotated[
        int,
        Meta(
            ge=60,
            le=30 * 86400,
            description="seconds after a submission (and between checks) before the flush "
            "asks the backend about a run whose outcome has not arrived",
        ),
    ] = 3600


class ConfigFile(Settings, kw_only=True):
    """retrain.yaml."""

    routes: Annotated[
        list[RouteSpec], Meta(min_length=1, description="where changes go, first match wins")
    ]


def json_schema() -> dict[str, Any]:
    """The JSON Schema of retrain.yaml."""
    schema = msgspec.json.schema(ConfigFile)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "retrain-trigger configuration (retrain.yaml)",
        **schema,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(json_schema(), indent=2, sort_keys=True))
