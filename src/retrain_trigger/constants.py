"""Names and patterns more than one module relies on, defined once.

- what Google's services accept: bucket names, PipelineJob ids;
- what this project names: routes, the ``retrain-`` labels every job carries, run states;
- one time format (RFC 3339, UTC, milliseconds) for every time a person or a log reads.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

# Cloud Storage bucket names: 3-63 characters, up to 222 with dots
# (https://cloud.google.com/storage/docs/buckets#naming); ``..`` is refused separately.
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")

# Route names: the first part of every job id and a label value.
ROUTE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,29}$")
ROUTE_NAME_TEXT = "1-30 characters of a-z, 0-9 and '-', starting with a letter"

# Vertex AI's PipelineJob id: a lowercase letter, then up to 127 of a-z, 0-9 and '-'
# (https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.pipelineJobs/create).
JOB_ID = re.compile(r"^[a-z][-a-z0-9]{0,127}$")
MAX_JOB_ID = 127

# Labels on every job this project starts (lowercase keys, values of at most 63 characters).
LABEL_PREFIX = "retrain-"
ROUTE_LABEL = LABEL_PREFIX + "route"
KIND_LABEL = LABEL_PREFIX + "kind"
KEY_LABEL = LABEL_PREFIX + "key"
COMMIT_LABEL = LABEL_PREFIX + "commit"
# The trace id of the event or request that started the run (W3C traceparent, 32 hex digits).
TRACE_LABEL = LABEL_PREFIX + "trace"

# Run states: Vertex's PipelineState names without the ``PIPELINE_STATE_`` prefix; the local
# backend uses the same names.
FINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
ACTIVE_STATES = frozenset({"QUEUED", "PENDING", "RUNNING", "CANCELLING", "PAUSED"})


def rfc3339(seconds: float | None) -> str:
    """Seconds since the epoch as ``2026-11-27T16:51:33.123Z``; ``""`` for None."""
    if seconds is None:
        return ""
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
