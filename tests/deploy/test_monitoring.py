"""deploy/terraform/monitoring.tf and its dashboard, held against what the functions log and against
Google's own API messages.

- Every log-based metric and alert policy, with the values Terraform gives it, is parsed as the
  API's message (``LogMetric`` of google-cloud-logging, ``AlertPolicy`` of google-cloud-monitoring,
  unknown fields refused): a misspelt enum (``ALIGN_DELTAS``) or field fails here, not at apply.
- Every log filter is evaluated, with a model of the Logging query language
  (https://cloud.google.com/logging/docs/view/logging-query-language), against log entries shaped
  as the functions write them (one JSON line on stdout: Cloud Run's ``run.googleapis.com/stdout``
  log, fields under jsonPayload), so each metric counts what its name says and nothing else.
- The PromQL condition parses (promql-parser) and names only metrics and labels defined here.
- The dashboard template renders with the values monitoring.tf passes and parses as a ``Dashboard``
  (google-cloud-monitoring-dashboards).
- The README's "Monitoring and alerts" section explains every metric and alert.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
from google.cloud.logging_v2.types import LogMetric
from google.cloud.monitoring_dashboard_v1 import Dashboard
from google.cloud.monitoring_v3.types import AlertPolicy

from tests.deploy.terraform_values import Module, placeholders, render_template

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "deploy" / "terraform"
PROJECT = "my-project"
INPUTS = {"project_id": PROJECT, "function_http_zip": "h.zip", "function_gcs_zip": "g.zip"}

LOG_METRICS = {
    "decisions",
    "event_to_submit_latency",
    "rejected_inputs",
    "run_outcomes",
    "run_durations",
    "windows_overdue",
    "champion_changes",
}
ALERTS = {"failed_runs", "dead_letter_backlog", "function_5xx", "no_success", "windows_overdue"}
# Google's own metrics the alerts and the dashboard read
# (https://cloud.google.com/monitoring/api/metrics_gcp).
GOOGLE_METRICS = {
    "pubsub.googleapis.com/subscription/num_undelivered_messages",
    "pubsub.googleapis.com/subscription/oldest_unacked_message_age",
    "run.googleapis.com/request_count",
    "run.googleapis.com/request_latencies",
}


@pytest.fixture(scope="module")
def module() -> Module:
    return Module(TERRAFORM, INPUTS)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _message(value: Any, *, keep: Callable[[str], bool] = lambda _: True) -> Any:
    """Terraform's block/argument tree as the API's JSON: blocks of one become objects."""
    if isinstance(value, dict):
        return {_camel(k): _message(v) for k, v in value.items() if keep(k)}
    if isinstance(value, list):
        items = [_message(v) for v in value]
        return items
    return value


_SINGLE_BLOCKS = {
    "metric_descriptor",
    "bucket_options",
    "exponential_buckets",
    "condition_threshold",
    "condition_matched_log",
    "condition_prometheus_query_language",
    "condition_absent",
    "trigger",
    "alert_strategy",
    "notification_rate_limit",
    "documentation",
}


def _api_json(module: Module, body: dict[str, Any]) -> dict[str, Any]:
    """A resource body, evaluated, as the API's JSON (blocks that hold one message unwrapped)."""
    meta = {"count", "for_each", "project", "depends_on", "provider", "lifecycle"}

    def convert(raw: Any, key: str = "") -> Any:
        if isinstance(raw, dict):
            if key in ("label_extractors", "user_labels"):  # maps: their keys are data
                return raw
            return {
                _camel(k): convert(v, k) for k, v in raw.items() if k not in meta and v is not None
            }
        if isinstance(raw, list):
            items = [convert(v, key) for v in raw]
            if key in _SINGLE_BLOCKS:
                assert len(items) == 1, key
                return items[0]
            return items
        return raw

    evaluated = {}
    for key, value in body.items():
        if key in meta:
            continue
        if key == "user_labels":
            assert value == "${local.labels}"
            evaluated[key] = {"app": "retrain-trigger", "managed-by": "terraform"}
            continue
        evaluated[key] = module.value(value)
    result = convert(evaluated)
    assert isinstance(result, dict)
    return result


def _metric(module: Module, key: str) -> dict[str, Any]:
    return module.resource("google_logging_metric", key)


def _alert(module: Module, key: str) -> dict[str, Any]:
    return module.resource("google_monitoring_alert_policy", key)


def _resources(module: Module, rtype: str) -> set[str]:
    return {name for (t, name) in module.resources if t == rtype}


def test_every_metric_and_alert_is_there_and_off_with_enable_monitoring(module: Module) -> None:
    assert _resources(module, "google_logging_metric") == LOG_METRICS
    assert _resources(module, "google_monitoring_alert_policy") == ALERTS
    for rtype in ("google_logging_metric", "google_monitoring_alert_policy"):
        for name in _resources(module, rtype):
            assert module.resource(rtype, name)["count"] == "${var.enable_monitoring ? 1 : 0}"
    assert module.variables["enable_monitoring"] is True


# --- log-based metrics as the Logging API's LogMetric ----------------------------------------------


@pytest.mark.parametrize("key", sorted(LOG_METRICS))
def test_each_log_metric_is_a_valid_log_metric(module: Module, key: str) -> None:
    payload = _api_json(module, _metric(module, key))
    metric = LogMetric.from_json(json.dumps(payload), ignore_unknown_fields=False)
    assert metric.name == f"retrain_{key}"
    descriptor = payload["metricDescriptor"]
    assert descriptor["metricKind"] == "DELTA"
    labels = {label["key"] for label in descriptor.get("labels", [])}
    assert labels == set(payload.get("labelExtractors", {})), "every label has its extractor"
    for extractor in [*payload.get("labelExtractors", {}).values(), payload.get("valueExtractor")]:
        if extractor is not None:
            assert re.fullmatch(r"EXTRACT\(jsonPayload\.\w+\)", extractor), extractor
    if descriptor["valueType"] == "DISTRIBUTION":
        assert "valueExtractor" in payload and "bucketOptions" in payload
    else:
        assert descriptor["valueType"] == "INT64"
        assert "valueExtractor" not in payload and "bucketOptions" not in payload


def test_a_misspelt_enum_is_refused_by_the_message(module: Module) -> None:
    """The check above can fail: the API message refuses what the API would."""
    payload = _api_json(module, _metric(module, "run_durations"))
    payload["metricDescriptor"]["valueType"] = "DISTRIBUTIONS"
    with pytest.raises(Exception, match="DISTRIBUTIONS"):
        LogMetric.from_json(json.dumps(payload), ignore_unknown_fields=False)


# --- a model of the Logging query language -----------------------------------------------------------

SEVERITIES = [
    "DEFAULT",
    "DEBUG",
    "INFO",
    "NOTICE",
    "WARNING",
    "ERROR",
    "CRITICAL",
    "ALERT",
    "EMERGENCY",
]
_TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<op>!=|>=|<=|=|:|<|>)|(?P<paren>[()])|(?P<word>[^\s()=:!<>"]+))'
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, i = [], 0
    while i < len(text):
        match = _TOKEN.match(text, i)
        assert match and match.end() > i, f"cannot read {text[i:]!r}"
        kind = match.lastgroup
        assert kind is not None
        out.append((kind, match.group(kind)))
        i = match.end()
        while i < len(text) and text[i].isspace():
            i += 1
    return out


class LogFilter:
    """``a AND b``, ``a OR b``, ``NOT a``, juxtaposition (AND), parentheses, and comparisons
    ``path OP value`` with OP one of = != : >= <= > <, a value a string, a word, ``*`` (with ``:``,
    the field is present) or a parenthesised ``("a" OR "b")``."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.pos = 0
        self.tree = self._or()
        assert self.pos == len(self.tokens), f"unread: {self.tokens[self.pos :]}"

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self) -> tuple[str, str]:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def _or(self) -> Any:
        terms = [self._and()]
        while self._peek() == ("word", "OR"):
            self._take()
            terms.append(self._and())
        return ("or", terms) if len(terms) > 1 else terms[0]

    def _and(self) -> Any:
        terms = [self._not()]
        while (token := self._peek()) is not None and token not in (("word", "OR"), ("paren", ")")):
            if token == ("word", "AND"):
                self._take()
            terms.append(self._not())
        return ("and", terms) if len(terms) > 1 else terms[0]

    def _not(self) -> Any:
        if self._peek() == ("word", "NOT"):
            self._take()
            return ("not", self._not())
        if self._peek() == ("paren", "("):
            self._take()
            inner = self._or()
            assert self._take() == ("paren", ")")
            return inner
        kind, path = self._take()
        assert kind == "word", f"expected a field, got {path!r}"
        kind, op = self._take()
        assert kind == "op", f"expected an operator after {path}, got {op!r}"
        return ("cmp", path, op, self._value())

    def _value(self) -> Any:
        kind, text = self._take()
        if (kind, text) == ("paren", "("):
            values = [self._value()]
            while self._peek() == ("word", "OR"):
                self._take()
                values.append(self._value())
            assert self._take() == ("paren", ")")
            return ("any", values)
        if kind == "str":
            return json.loads(text)
        return text

    def matches(self, entry: dict[str, Any]) -> bool:
        return self._eval(self.tree, entry)

    def _eval(self, node: Any, entry: dict[str, Any]) -> bool:
        if node[0] == "and":
            return all(self._eval(n, entry) for n in node[1])
        if node[0] == "or":
            return any(self._eval(n, entry) for n in node[1])
        if node[0] == "not":
            return not self._eval(node[1], entry)
        _, path, op, value = node
        present, actual = _field(entry, path)
        if isinstance(value, tuple):
            return any(self._eval(("cmp", path, op, v), entry) for v in value[1])
        if op == ":" and value == "*":
            return present
        if not present:
            return op == "!="
        if path == "severity":
            actual, value = SEVERITIES.index(actual), SEVERITIES.index(value)
        elif isinstance(actual, (int, float)) and not isinstance(actual, bool):
            value = float(value)
        return {
            "=": lambda: actual == value,
            "!=": lambda: actual != value,
            ":": lambda: str(value).lower() in str(actual).lower(),
            ">=": lambda: actual >= value,
            "<=": lambda: actual <= value,
            ">": lambda: actual > value,
            "<": lambda: actual < value,
        }[op]()


def _field(entry: dict[str, Any], path: str) -> tuple[bool, Any]:
    value: Any = entry
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _extract(entry: dict[str, Any], extractor: str) -> Any:
    match = re.fullmatch(r"EXTRACT\((.+)\)", extractor)
    assert match, extractor
    present, value = _field(entry, match.group(1))
    return value if present else None


# Log entries as Cloud Run makes them of the functions' JSON lines (the fields of each line are the
# ones the functions write: decision lines, run outcome lines, window overdue and champion lines).
STDOUT = f"projects/{PROJECT}/logs/run.googleapis.com%2Fstdout"


def _entry(
    payload: dict[str, Any], service: str = "retrain-event", log: str = STDOUT
) -> dict[str, Any]:
    severity = payload.pop("severity", "INFO")
    return {
        "logName": log,
        "severity": severity,
        "resource": {"type": "cloud_run_revision", "labels": {"service_name": service}},
        "jsonPayload": payload,
    }


def _decision(decision: str, **fields: Any) -> dict[str, Any]:
    line = {
        "event": "decision",
        "decision": decision,
        "route": "mnist",
        "code": "",
        "reason": "",
        "latency_ms": 12.5,
        **fields,
    }
    return _entry(line, fields.pop("_service", "retrain-event"))


def _outcome(state: str, **fields: Any) -> dict[str, Any]:
    severity = {"FAILED": "ERROR", "CANCELLED": "WARNING"}.get(state, "INFO")
    line = {
        "event": "run_outcome",
        "severity": severity,
        "route": "mnist",
        "job_id": "mnist-data-x-0123",
        "job": "projects/p/locations/r/pipelineJobs/mnist-data-x-0123",
        "run_state": state,
        "duration_seconds": 1830,
        "error": "task train failed" if state == "FAILED" else "",
        "reporter": "exit-handler",
        **fields,
    }
    return _entry(line)


SUBMITTED = _decision("submitted", event_age_ms=5400)
SUBMITTED_NO_AGE = _decision("submitted")
DUPLICATE = _decision("duplicate", event_age_ms=7000)
BATCHED = _decision("batched")
SKIPPED = _decision("skipped", reason="object is 0 bytes")
REJECTED = _decision("rejected", route="", code="bad_envelope", severity="ERROR")
FAILED_DECISION = _decision("failed", code="vertex_unavailable", severity="ERROR")
FROM_HTTP = _entry(
    {"event": "decision", "decision": "submitted", "route": "mnist", "event_age_ms": 90},
    "retrain-http",
)
OTHER_SERVICE = _entry(
    {"event": "decision", "decision": "submitted", "route": "mnist"}, "retrain-ui"
)
ON_STDERR = _entry(
    {"event": "decision", "decision": "submitted", "route": "mnist"},
    log=f"projects/{PROJECT}/logs/run.googleapis.com%2Fstderr",
)
SUCCEEDED = _outcome("SUCCEEDED")
FAILED = _outcome("FAILED")
CANCELLED = _outcome("CANCELLED", reporter="reconcile")
OVERDUE = _entry(
    {
        "event": "window_overdue",
        "severity": "WARNING",
        "route": "daily",
        "window_id": "w1",
        "age_seconds": 4000,
        "objects": 12,
    },
    "retrain-http",
)
CHAMPION = _entry(
    {
        "event": "champion_changed",
        "route": "mnist",
        "job_id": "j",
        "version": "7",
        "metric_name": "accuracy",
        "metric_value": 0.97,
    }
)
ALL = {
    "submitted": SUBMITTED,
    "submitted_no_age": SUBMITTED_NO_AGE,
    "duplicate": DUPLICATE,
    "batched": BATCHED,
    "skipped": SKIPPED,
    "rejected": REJECTED,
    "failed_decision": FAILED_DECISION,
    "from_http": FROM_HTTP,
    "other_service": OTHER_SERVICE,
    "on_stderr": ON_STDERR,
    "succeeded": SUCCEEDED,
    "failed": FAILED,
    "cancelled": CANCELLED,
    "overdue": OVERDUE,
    "champion": CHAMPION,
}
DECISIONS = {
    "submitted",
    "submitted_no_age",
    "duplicate",
    "batched",
    "skipped",
    "rejected",
    "failed_decision",
    "from_http",
}

# metric -> (the entries it counts, the labels each gets, the value it extracts)
EXPECTED: dict[str, tuple[set[str], dict[str, dict[str, Any]], dict[str, Any]]] = {
    "decisions": (
        DECISIONS,
        {
            "submitted": {"route": "mnist", "outcome": "submitted"},
            "batched": {"route": "mnist", "outcome": "batched"},
            "rejected": {"route": "", "outcome": "rejected"},
        },
        {},
    ),
    "event_to_submit_latency": (
        {"submitted", "from_http"},
        {"submitted": {"route": "mnist"}},
        {"submitted": 5400, "from_http": 90},
    ),
    "rejected_inputs": ({"rejected"}, {"rejected": {"code": "bad_envelope", "route": ""}}, {}),
    "run_outcomes": (
        {"succeeded", "failed", "cancelled"},
        {
            "failed": {"route": "mnist", "state": "FAILED", "reporter": "exit-handler"},
            "cancelled": {"route": "mnist", "state": "CANCELLED", "reporter": "reconcile"},
        },
        {},
    ),
    "run_durations": (
        {"succeeded", "failed", "cancelled"},
        {"succeeded": {"route": "mnist", "state": "SUCCEEDED"}},
        {"succeeded": 1830},
    ),
    "windows_overdue": ({"overdue"}, {"overdue": {"route": "daily"}}, {}),
    "champion_changes": ({"champion"}, {"champion": {"route": "mnist"}}, {}),
}


def test_the_filter_model_reads_the_language_as_documented() -> None:
    """The model itself, on the documented forms it relies on."""
    entry = SUBMITTED
    assert LogFilter('jsonPayload.decision="submitted"').matches(entry)
    assert not LogFilter('jsonPayload.decision="skipped"').matches(entry)
    assert LogFilter("jsonPayload.event_age_ms:*").matches(entry)
    assert not LogFilter("jsonPayload.missing:*").matches(entry)
    assert LogFilter('resource.labels.service_name=("a" OR "retrain-event")').matches(entry)
    assert LogFilter('NOT jsonPayload.decision="skipped" AND severity>=INFO').matches(entry)
    assert not LogFilter("severity>=WARNING").matches(entry)
    assert LogFilter("severity>=WARNING").matches(REJECTED)
    assert LogFilter('jsonPayload.decision="x" OR jsonPayload.route="mnist"').matches(entry)


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_each_metric_counts_what_its_name_says(module: Module, key: str) -> None:
    body = _metric(module, key)
    log_filter = LogFilter(module.value(body["filter"]))
    counted, labels, values = EXPECTED[key]
    matched = {name for name, entry in ALL.items() if log_filter.matches(entry)}
    assert matched == counted
    extractors = module.value(body.get("label_extractors", {}))
    for name, expected in labels.items():
        got = {label: _extract(ALL[name], e) for label, e in extractors.items()}
        assert got == expected, name
    for name, expected_value in values.items():
        assert _extract(ALL[name], module.value(body["value_extractor"])) == expected_value


# --- alert policies as the Monitoring API's AlertPolicy ---------------------------------------------


@pytest.mark.parametrize("key", sorted(ALERTS))
def test_each_alert_policy_is_a_valid_alert_policy(module: Module, key: str) -> None:
    body = _alert(module, key)
    payload = _api_json(module, body)
    policy = AlertPolicy.from_json(json.dumps(payload), ignore_unknown_fields=False)
    assert policy.display_name.startswith("retrain-trigger retrain: ")
    assert body["notification_channels"] == "${var.notification_channels}"
    assert payload["severity"] in ("ERROR", "WARNING")
    assert payload["documentation"]["mimeType"] == "text/markdown"
    content = payload["documentation"]["content"]
    assert (
        'Runbook: README.md of retrain-trigger, section "Operations > Monitoring and alerts"'
        in (content)
    )
    assert "${" not in content.replace("${log.extracted_label.", "")
    assert payload["alertStrategy"]["autoClose"].endswith("s")


def _conditions(module: Module, key: str) -> list[dict[str, Any]]:
    return _api_json(module, _alert(module, key))["conditions"]


def test_a_failed_run_alerts_once_per_failed_outcome_with_its_route_and_job(module: Module) -> None:
    [condition] = _conditions(module, "failed_runs")
    log_match = condition["conditionMatchedLog"]
    log_filter = LogFilter(log_match["filter"])
    assert {name for name, entry in ALL.items() if log_filter.matches(entry)} == {"failed"}
    labels = {k: _extract(FAILED, v) for k, v in log_match["labelExtractors"].items()}
    assert labels == {"route": "mnist", "job_id": "mnist-data-x-0123", "reporter": "exit-handler"}
    # A log-match condition needs a notification rate limit
    # (https://cloud.google.com/logging/docs/alerting/log-based-alerts).
    assert _api_json(module, _alert(module, "failed_runs"))["alertStrategy"][
        "notificationRateLimit"
    ]
    content = _api_json(module, _alert(module, "failed_runs"))["documentation"]["content"]
    for label in re.findall(r"\$\{log\.extracted_label\.(\w+)\}", content):
        assert label in log_match["labelExtractors"]


def test_dead_letter_backlog_watches_both_dead_letter_subscriptions(module: Module) -> None:
    [condition] = _conditions(module, "dead_letter_backlog")
    threshold = condition["conditionThreshold"]
    names = {
        module.value(module.resource("google_pubsub_subscription", n)["name"])
        for n in ("dead_letter", "outcomes_dead_letter")
    }
    assert names == {"retrain-gcs-events-dead-letter", "retrain-run-outcomes-dead-letter"}
    for name in names:
        assert f'"{name}"' in threshold["filter"]
    assert (
        'metric.type="pubsub.googleapis.com/subscription/num_undelivered_messages"'
        in (threshold["filter"])
    )
    assert threshold["comparison"] == "COMPARISON_GT" and threshold["thresholdValue"] == 0


def test_the_5xx_alert_is_a_ratio_per_function(module: Module) -> None:
    [condition] = _conditions(module, "function_5xx")
    threshold = condition["conditionThreshold"]
    numerator = threshold["filter"]
    assert numerator == (
        threshold["denominatorFilter"] + ' AND metric.label.response_code_class="5xx"'
    )
    assert 'one_of("retrain-http", "retrain-event")' in numerator
    assert threshold["aggregations"] == threshold["denominatorAggregations"]
    assert threshold["aggregations"][0]["groupByFields"] == ["resource.label.service_name"]
    assert threshold["thresholdValue"] == module.variables["alert_5xx_ratio"] == 0.05


def _log_metric_labels(module: Module) -> dict[str, set[str]]:
    out = {}
    for key in LOG_METRICS:
        body = _metric(module, key)
        out[module.value(body["name"])] = set(module.value(body.get("label_extractors", {})))
    return out


def test_threshold_conditions_name_metrics_and_labels_that_exist(module: Module) -> None:
    labels = _log_metric_labels(module)
    for key in ALERTS:
        for condition in _conditions(module, key):
            threshold = condition.get("conditionThreshold")
            if not threshold:
                continue
            metric = re.search(r'metric\.type="([^"]+)"', threshold["filter"])
            assert metric, threshold["filter"]
            name = metric.group(1)
            if name.startswith("logging.googleapis.com/user/"):
                own = labels[name.removeprefix("logging.googleapis.com/user/")]
                for field in threshold["aggregations"][0].get("groupByFields", []):
                    if field.startswith("metric.label."):
                        assert field.removeprefix("metric.label.") in own, (key, field)
            else:
                assert name in GOOGLE_METRICS, (key, name)


def _selectors(node: Any) -> Iterator[Any]:
    if type(node).__name__ == "VectorSelector":
        yield node
    for attr in ("lhs", "rhs", "expr", "vector_selector"):
        child = getattr(node, attr, None)
        if child is not None:
            yield from _selectors(child)
    for child in getattr(node, "args", None) or []:
        yield from _selectors(child)


def test_no_successful_run_is_a_promql_condition_over_days(module: Module) -> None:
    """Metric-absence conditions end at 24.5 hours
    (https://cloud.google.com/monitoring/alerts/types-of-conditions); PromQL reads up to 2 years
    (https://cloud.google.com/monitoring/alerts/using-promql). The query names the log-based
    metrics defined here by their PromQL names, and only labels they have."""
    [condition] = _conditions(module, "no_success")
    query = condition["conditionPrometheusQueryLanguage"]["query"]
    tree = promql_parser.parse(query)
    assert tree.op == "unless" or str(tree.op) == "unless"
    labels = _log_metric_labels(module)
    ranges = {}
    for selector in _selectors(tree):
        name = selector.name
        assert name.startswith("logging_googleapis_com:user_"), name
        metric = name.removeprefix("logging_googleapis_com:user_")
        assert metric in labels, f"{name} is no log-based metric of monitoring.tf"
        for matcher in selector.matchers.matchers:
            assert matcher.name in labels[metric] | {"monitored_resource"}, matcher.name
        ranges[metric] = None
    assert set(ranges) == {"retrain_decisions", "retrain_run_outcomes"}
    assert "[7d]" in query and "[30d]" in query
    assert module.variables["alert_no_success_days"] == 7
    assert module.variables["alert_route_activity_days"] == 30
    assert 'state="SUCCEEDED"' in query and 'route!=""' in query


def test_the_promql_check_catches_a_wrong_metric_name(module: Module) -> None:
    [condition] = _conditions(module, "no_success")
    query = condition["conditionPrometheusQueryLanguage"]["query"].replace(
        "user_retrain_run_outcomes", "user_retrain_run_outcome"
    )
    names = {
        s.name.removeprefix("logging_googleapis_com:user_")
        for s in _selectors(promql_parser.parse(query))
    }
    assert not names <= set(_log_metric_labels(module))
    with pytest.raises(ValueError, match="unclosed left parenthesis"):
        promql_parser.parse(query.replace("unless on (route)", "unless on (route"))


# --- the dashboard ------------------------------------------------------------------------------------


def _top_level_split(text: str, separator: str = ",") -> list[str]:
    parts, depth, quoted, current, i = [], 0, False, [], 0
    while i < len(text):
        c = text[i]
        if quoted:
            if c == "\\":
                current.append(text[i : i + 2])
                i += 2
                continue
            quoted = c != '"'
        elif c == '"':
            quoted = True
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == separator and depth == 0:
            parts.append("".join(current))
            current = []
            i += 1
            continue
        current.append(c)
        i += 1
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _dashboard_values(module: Module) -> dict[str, str]:
    """The templatefile() arguments of monitoring.tf, evaluated."""
    raw = module.resource("google_monitoring_dashboard", "this")["dashboard_json"]
    match = re.fullmatch(r"\$\{templatefile\((\S+?), \{(.*)\}\)\}", raw, re.DOTALL)
    assert match, raw[:200]
    assert module.expr(match.group(1)).endswith("/dashboards/retrain-trigger.json.tftpl")
    values = {}
    for pair in _top_level_split(match.group(2)):
        name, expr = pair.split("=", 1)
        values[name.strip()] = module.expr(expr.strip())
    return values


def test_the_dashboard_renders_and_is_a_valid_dashboard(module: Module) -> None:
    template = (TERRAFORM / "dashboards" / "retrain-trigger.json.tftpl").read_text()
    values = _dashboard_values(module)
    assert placeholders(template) == set(values), "placeholders and templatefile() arguments differ"
    rendered = render_template(template, values)
    dashboard = Dashboard.from_json(rendered, ignore_unknown_fields=False)
    assert dashboard.display_name == "retrain-trigger retrain"
    text = json.loads(rendered)
    filters = [
        data["timeSeriesQuery"]["timeSeriesFilter"]["filter"]
        for tile in text["mosaicLayout"]["tiles"]
        for data in tile["widget"].get("xyChart", {}).get("dataSets", [])
    ]
    metrics = {re.search(r'metric\.type="([^"]+)"', f).group(1) for f in filters}  # type: ignore[union-attr]
    own = {f"logging.googleapis.com/user/retrain_{key}" for key in LOG_METRICS}
    assert own <= metrics, f"not on the dashboard: {own - metrics}"
    assert metrics - own <= GOOGLE_METRICS
    logs = [
        t["widget"]["logsPanel"]["filter"]
        for t in text["mosaicLayout"]["tiles"]
        if "logsPanel" in t["widget"]
    ]
    assert len(logs) == 1
    problems = LogFilter(logs[0])
    assert {n for n, e in ALL.items() if problems.matches(e)} == {
        "rejected",
        "failed_decision",
        "failed",
        "cancelled",
        "overdue",
    }
    # Tiles fit the 48-column grid without overlapping.
    taken: set[tuple[int, int]] = set()
    for tile in text["mosaicLayout"]["tiles"]:
        cells = {
            (x, y)
            for x in range(tile.get("xPos", 0), tile.get("xPos", 0) + tile["width"])
            for y in range(tile.get("yPos", 0), tile.get("yPos", 0) + tile["height"])
        }
        assert max(x for x, _ in cells) < text["mosaicLayout"]["columns"]
        assert not cells & taken, tile["widget"]["title"]
        taken |= cells


def test_a_misspelt_dashboard_field_is_refused(module: Module) -> None:
    template = (TERRAFORM / "dashboards" / "retrain-trigger.json.tftpl").read_text()
    rendered = render_template(template, _dashboard_values(module)).replace(
        '"perSeriesAligner": "ALIGN_DELTA"', '"perSeriesAligner": "ALIGN_DELTAS"', 1
    )
    with pytest.raises(Exception, match="ALIGN_DELTAS"):
        Dashboard.from_json(rendered, ignore_unknown_fields=False)


# --- the runbook ---------------------------------------------------------------------------------------


def _runbook() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("### Monitoring and alerts")
    end = min(i for i in (text.find("\n## ", start), text.find("\n### ", start + 1)) if i > 0)
    return text[start:end]


def test_the_readme_explains_every_metric_and_alert(module: Module) -> None:
    runbook = _runbook()
    for key in LOG_METRICS:
        assert f"`<prefix>_{key}`" in runbook, f"metric {key} is not explained"
    for key in ALERTS:
        title = module.value(_alert(module, key)["display_name"]).removeprefix(
            "retrain-trigger retrain: "
        )
        days = module.variables["alert_no_success_days"]
        title = title.replace(f"in {days} days", "in N days")  # the runbook names the variable
        heading = re.search(rf"^#### .*{re.escape(title)}", runbook, re.MULTILINE | re.IGNORECASE)
        assert heading, f"alert {title!r} has no runbook entry"
        entry = runbook[heading.end() :].split("\n#### ", 1)[0]
        assert "What it means" in entry and "What to do" in entry, title


# --- the lines the functions really write, through the same filters ----------------------------


def _real_lines() -> dict[str, dict[str, Any]]:
    """Log entries of lines made by the functions' own code (decisions.entry_for,
    runs.outcome_line, runs.champion_line), as Cloud Run makes them LogEntries."""
    import time

    from retrain_trigger import runs
    from retrain_trigger.constants import rfc3339
    from retrain_trigger.decisions import entry_for
    from retrain_trigger.model import Decision, Kind, Outcome, Trigger
    from retrain_trigger.store.base import ChampionChange, RunRecord

    trigger = Trigger(
        kind=Kind.DATA,
        source="eventarc",
        bucket="b",
        object="data/x.csv",
        generation="1",
        size=10,
        event_time=rfc3339(time.time() - 5.0),
    )
    submitted = Decision(
        outcome=Outcome.SUBMITTED, route="mnist", job_id="mnist-data-x", trigger=trigger
    )
    rejected = Decision(outcome=Outcome.REJECTED, reason="bad", status=400, code="bad_envelope")
    record = RunRecord(
        route="mnist",
        job_id="mnist-data-x",
        job_name="projects/p/locations/r/pipelineJobs/mnist-data-x",
        state="FAILED",
        submitted_at=100.0,
        ended_at=1930.0,
        duration_s=1830.0,
        error="task 'train' failed",
        failed_task="train",
        parameters={},
        object_uri="gs://b/data/x.csv",
        trace=None,
        reporter="exit-handler",
    )
    change = ChampionChange("mnist", "mnist-data-x", "accuracy", 0.97, "gs://m/7/", "7", None, 1.0)
    lines = {
        "submitted": entry_for(submitted),
        "rejected": entry_for(rejected),
        "failed": runs.outcome_line(record),
        "champion": runs.champion_line(change),
    }
    return {name: _entry(json.loads(json.dumps(line))) for name, line in lines.items()}


def test_the_lines_the_functions_write_are_counted_as_the_hand_made_ones(module: Module) -> None:
    real = _real_lines()
    assert real["submitted"]["jsonPayload"]["event_age_ms"] >= 5000
    for key in EXPECTED:
        body = _metric(module, key)
        log_filter = LogFilter(module.value(body["filter"]))
        extractors = module.value(body.get("label_extractors", {}))
        for name, entry in real.items():
            assert log_filter.matches(entry) == log_filter.matches(ALL[name]), (key, name)
            if log_filter.matches(entry):
                # A field the line leaves out extracts as an empty label value.
                got = {label: _extract(entry, e) or "" for label, e in extractors.items()}
                want = {label: _extract(ALL[name], e) or "" for label, e in extractors.items()}
                assert got == want, (key, name)
    [failed] = _conditions(module, "failed_runs")
    log_match = failed["conditionMatchedLog"]
    assert LogFilter(log_match["filter"]).matches(real["failed"])
    labels = {k: _extract(real["failed"], v) for k, v in log_match["labelExtractors"].items()}
    assert labels == {"route": "mnist", "job_id": "mnist-data-x", "reporter": "exit-handler"}
