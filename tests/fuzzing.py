"""Hypothesis strategies and checks shared by the property tests of untrusted input.

tests/unit/test_fuzz.py drives the decoders with them in process; tests/integration/
test_fuzz_entrypoints.py drives both functions through functions-framework and the fake Vertex.
"""

from __future__ import annotations

import base64
import json
import re
import string
from typing import Any

from cloudevents.http import CloudEvent
from hypothesis import HealthCheck, settings
from hypothesis import event as tally
from hypothesis import strategies as st

from retrain_trigger import events, rules
from retrain_trigger.config import parse_config
from retrain_trigger.errors import RejectedError
from retrain_trigger.model import RunRequest, Trigger
from retrain_trigger.spec import TemplateCache
from tests.conftest import BASE_CONFIG, MNIST_TEMPLATE

MAX_BYTES = 64 << 10  # small, so "too large" is cheap to reach

JOB_ID = re.compile(r"^[a-z][a-z0-9-]{0,127}$")
LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.function_scoped_fixture,
            HealthCheck.data_too_large,
        ],
    )


# --------------------------------------------------------------------------- strategies

TRICKY = [
    "..", "/", "//", "./", "../", "~", "~$", ".", ".tmp", "._COPYING_", "_temporary/", ".hidden/",
    "_SUCCESS", "manifest.json", "pipeline-root/", "gs://", "%2F", "?", "#", "*", "**", "[", "]",
    "{", "}", "{data_uri}", "\\", " ", "\t", "\n", "\r\n", "\x00", "\x7f", "\u202e", "\ufeff",
    "\ud800", "Ünïcödé", "ß", "İ", "日本語", "🙂", "UPPER", "-", "_", "--", "a" * 70, "-" * 70,
    "0" * 25, "é" * 600,
]  # fmt: skip

pieces = st.one_of(st.sampled_from(TRICKY), st.text(max_size=12))
names = st.lists(pieces, min_size=1, max_size=8).map("".join)
data_names = st.one_of(names, names.map(lambda n: "data/" + n), names.map(lambda n: f"data/{n}/x"))

# Printable but hostile: what passes the decoders' checks and must still make safe job ids,
# labels and display names (case, dots, unicode, slashes, braces, 63+ characters ...).
PRINTABLE_TRICKY = [
    t for t in TRICKY if not any(c in t for c in "\t\n\r\x00\x7f\ud800 ") and t != "é" * 600
]
printable = st.characters(
    codec="utf-8", exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp"), exclude_characters="\x85"
)
safe_pieces = st.one_of(st.sampled_from(PRINTABLE_TRICKY), st.text(printable, max_size=12))
safe_names = (
    st.lists(safe_pieces, min_size=1, max_size=8).map("".join).filter(lambda n: ".." not in n)
)
object_names = st.one_of(
    safe_names.map(lambda n: "data/" + n),
    st.tuples(safe_names, safe_names).map(lambda t: f"data/{t[0]}/{t[1]}"),
    st.text(printable, min_size=1, max_size=300).map(lambda n: "data/" + n),
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=40),
    names,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=25,
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the strategy's value, sometimes any JSON value instead, sometimes absent."""
    return st.one_of(strategy, strategy, strategy, json_scalars, st.just(None))


generations = st.integers(min_value=1, max_value=2**63).map(str)
digits = st.integers(min_value=0, max_value=2**64).map(str)
hexes = st.text(alphabet="0123456789abcdefABCDEF", min_size=1, max_size=70)
shas = st.text(alphabet="0123456789abcdefABCDEF", min_size=7, max_size=64)

# Objects that decode: only their names (and metadata) are hostile.
valid_gcs_objects = st.fixed_dictionaries(
    {"bucket": st.just("ct-bucket"), "name": object_names, "generation": generations},
    optional={
        "size": st.integers(min_value=0, max_value=2**40).map(str),
        "contentType": st.text(printable, max_size=100),
        "metadata": st.dictionaries(st.text(max_size=20), st.text(max_size=50), max_size=5),
    },
)
# Anything in the shape of an object resource.
noisy_gcs_objects = st.fixed_dictionaries(
    {
        "bucket": maybe(st.sampled_from(["ct-bucket", "other-bucket", "CT", "a", "x" * 230])),
        "name": maybe(data_names),
        "generation": maybe(st.one_of(digits, st.integers(min_value=-5, max_value=2**70))),
        "size": maybe(st.one_of(digits, st.integers(min_value=-5, max_value=10**6))),
    },
    optional={
        "contentType": maybe(st.text(max_size=300)),
        "metadata": maybe(st.dictionaries(names, json_scalars, max_size=70)),
        "metageneration": maybe(digits),
    },
)
gcs_objects = st.one_of(valid_gcs_objects, noisy_gcs_objects)

digests = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
image_uris = st.one_of(
    st.builds(
        lambda host, path, digest: f"{host}/{path}@sha256:{digest}",
        st.sampled_from(["us-docker.pkg.dev", "gcr.io", "eu.gcr.io", "localhost:5000"]),
        st.lists(
            st.from_regex(r"[a-z0-9][a-z0-9._-]{0,40}", fullmatch=True), min_size=1, max_size=4
        ).map("/".join),
        digests,
    ),
    names,
)
model_uris = st.one_of(
    safe_names.map(lambda n: "gs://base-models/" + n),
    safe_names.map(lambda n: "projects/p/locations/us-central1/models/" + n),
    safe_names.map(lambda n: "https://example.com/models/" + n),
)
optional_fields = {
    "route": st.just("mnist"),
    "build_id": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}", fullmatch=True),
    "branch": st.from_regex(r"[A-Za-z0-9._/+-]{1,255}", fullmatch=True),
    "force": st.booleans(),
    "nonce": st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True),
}
# Triggers that decode: a code or model change whose values are valid but hostile.
valid_code_bodies = st.fixed_dictionaries(
    {"kind": st.just("code"), "commit_sha": shas},
    optional={"image_uri": image_uris.filter(lambda u: "@sha256:" in u), **optional_fields},
)
valid_model_bodies = st.fixed_dictionaries(
    {"kind": st.just("model"), "model_uri": model_uris}, optional=optional_fields
)
valid_http_bodies = st.one_of(valid_code_bodies, valid_model_bodies)

noisy_http_bodies = st.fixed_dictionaries(
    {},
    optional={
        "kind": maybe(st.sampled_from(["code", "model", "data", "CODE", ""])),
        "route": maybe(st.sampled_from(["mnist", "other", "MNIST", "mnist-"]) | names),
        "commit_sha": maybe(hexes),
        "image_uri": maybe(image_uris),
        "build_id": maybe(names),
        "branch": maybe(names),
        "model_uri": maybe(st.one_of(model_uris, names)),
        "template": maybe(names.map(lambda n: "gs://ct-templates/mnist/" + n)),
        "force": maybe(st.booleans() | st.sampled_from(["true", "false", "yes"])),
        "nonce": maybe(names),
        "dry_run": maybe(st.booleans()),
    },
)
http_bodies = st.one_of(valid_http_bodies, noisy_http_bodies)

bodies = st.one_of(
    http_bodies,
    http_bodies.map(lambda b: {**b, "dry_run": True}),
    json_values,
    st.dictionaries(st.text(max_size=20), json_values, max_size=4),
)


@st.composite
def raw_bodies(draw: st.DrawFn) -> bytes:
    """Bytes as they arrive: JSON of the above, random bytes, deep nesting, or too much."""
    kind = draw(st.sampled_from(["json", "json", "json", "bytes", "deep", "huge", "unicode"]))
    if kind == "json":
        return json.dumps(draw(bodies), ensure_ascii=draw(st.booleans())).encode("utf-8", "replace")
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "deep":
        depth = draw(st.integers(min_value=1, max_value=3000))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        return (opener * depth + "1" + closer * depth).encode()
    if kind == "huge":
        size = draw(st.sampled_from([MAX_BYTES - 1, MAX_BYTES, MAX_BYTES + 1, 3 * MAX_BYTES]))
        return ('{"kind": "code", "branch": "' + "b" * max(size - 30, 0) + '"}').encode()
    return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")


def _b64(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


@st.composite
def valid_notifications(draw: st.DrawFn) -> dict[str, Any]:
    """A GCS notification as Pub/Sub carries it, attributes agreeing with the payload."""
    resource = draw(valid_gcs_objects)
    payload_format = draw(st.sampled_from(["JSON_API_V1", "NONE"]))
    return {
        "data": _b64(resource) if payload_format == "JSON_API_V1" else "",
        "attributes": {
            "bucketId": resource["bucket"],
            "objectId": resource["name"],
            "objectGeneration": resource["generation"],
            "eventType": draw(
                st.sampled_from(["OBJECT_FINALIZE", "OBJECT_FINALIZE", "OBJECT_DELETE"])
            ),
            "payloadFormat": payload_format,
        },
        "messageId": draw(st.from_regex(r"[0-9]{1,20}", fullmatch=True)),
        "publishTime": "2026-11-27T16:00:01.123Z",
    }


noisy_attributes = st.fixed_dictionaries(
    {},
    optional={
        "bucketId": maybe(st.sampled_from(["ct-bucket", "Bad Bucket"])),
        "objectId": maybe(data_names),
        "objectGeneration": maybe(digits),
        "eventType": maybe(st.sampled_from(["OBJECT_FINALIZE", "OBJECT_DELETE", "NOPE"])),
        "payloadFormat": maybe(st.sampled_from(["JSON_API_V1", "NONE", "XML"])),
        "buildId": maybe(names),
    },
)
noisy_messages = st.fixed_dictionaries(
    {
        "data": maybe(
            st.one_of(st.one_of(gcs_objects, http_bodies).map(_b64), st.text(max_size=30))
        ),
        "attributes": maybe(noisy_attributes),
    },
    optional={"messageId": maybe(names), "publishTime": maybe(st.text(max_size=40))},
)
pubsub_messages = st.one_of(
    valid_notifications(),
    valid_http_bodies.map(lambda body: {"data": _b64(body), "messageId": "1"}),
    noisy_messages,
    json_values,
)


def _nested(depth: int, as_list: bool) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value] if as_list else {"a": value}
    return value


# Data already parsed by the CloudEvents SDK may be nested deeper than any JSON body allows.
deep_values = st.builds(_nested, st.integers(min_value=1, max_value=5000), st.booleans())

# Any event data at all: JSON of any shape, bytes, or deep nesting.
anything = st.one_of(json_values, st.binary(max_size=200), deep_values)

# What an HTTP header value may hold (binary-mode CloudEvent attributes travel as headers).
HEADER_TEXT = string.ascii_letters + string.digits + string.punctuation + " "


@st.composite
def cloud_events(draw: st.DrawFn) -> CloudEvent:
    ce_type = draw(
        st.one_of(
            st.just(events.STORAGE_FINALIZED),
            st.just(events.STORAGE_FINALIZED),
            st.just(events.PUBSUB_PUBLISHED),
            st.sampled_from([events.STORAGE_PREFIX + "deleted", "com.example.other"]),
            st.text(alphabet=HEADER_TEXT, min_size=1, max_size=30),
        )
    )
    attributes = {
        "type": ce_type,
        "source": draw(
            st.sampled_from(
                [
                    "//storage.googleapis.com/projects/_/buckets/ct-bucket",
                    "//pubsub.googleapis.com/projects/p/topics/cloud-builds",
                ]
            )
            | st.text(alphabet=HEADER_TEXT, min_size=1, max_size=30)
        ),
        "id": draw(st.text(alphabet=HEADER_TEXT, min_size=1, max_size=40)),
    }
    if draw(st.booleans()):
        attributes["time"] = draw(
            st.sampled_from(["2026-11-27T16:00:00Z", "2026-11-27T16:00:00.123456789+01:00", "now"])
        )
    if ce_type.startswith(events.STORAGE_PREFIX):
        data = st.one_of(valid_gcs_objects, valid_gcs_objects, noisy_gcs_objects, anything)
    elif ce_type == events.PUBSUB_PUBLISHED:
        data = st.one_of(
            st.fixed_dictionaries({"message": pubsub_messages}, optional={"subscription": names}),
            anything,
        )
    else:
        data = anything
    return CloudEvent(attributes, draw(data))


# --------------------------------------------------------------------------- checks

CONFIG = parse_config(BASE_CONFIG.format(template=MNIST_TEMPLATE), source="fuzz.yaml")
TEMPLATES = TemplateCache.for_config(CONFIG)


def check_request(request: RunRequest) -> None:
    assert JOB_ID.match(request.job_id), request.job_id
    assert len(request.labels) <= 64
    for key, value in request.labels.items():
        assert LABEL_KEY.match(key), (key, value)
        assert LABEL_VALUE.match(value), (key, value)
    assert 0 < len(request.display_name) <= 128


def check_planned(trigger: Trigger) -> None:
    """Rules either refuse (RejectedError) or plan something Vertex would accept."""
    try:
        planned = rules.plan(CONFIG, trigger, TEMPLATES)
    except RejectedError:
        tally("planned: rejected by the rules")
        return
    tally(f"planned: {type(planned).__name__}")
    if isinstance(planned, RunRequest):
        check_request(planned)


def decoded(call: Any) -> Trigger | None:
    try:
        return call()
    except RejectedError:
        return None
