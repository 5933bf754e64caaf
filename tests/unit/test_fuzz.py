"""Property tests of the decoders of untrusted input, in process.

For any input a decoder returns a Trigger or raises a RejectedError subclass, nothing else, and
whatever does plan a run gets a job id and labels that Vertex accepts. The same strategies drive
both entry points through functions-framework in tests/integration/test_fuzz_entrypoints.py.

Examples are derandomized and no example database is kept, so CI runs the same inputs each time.
"""

from __future__ import annotations

from typing import Any

import pytest
from cloudevents.http import CloudEvent
from hypothesis import given
from hypothesis import strategies as st

from retrain_trigger import events
from retrain_trigger.errors import RejectedError
from tests.fuzzing import (
    MAX_BYTES,
    bodies,
    check_planned,
    cloud_events,
    decoded,
    fuzz,
    gcs_objects,
    json_values,
    maybe,
    pubsub_messages,
    raw_bodies,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# --------------------------------------------------------------------------- decoders


@fuzz(400)
@given(raw=st.one_of(raw_bodies(), st.text(max_size=200)))
def test_parse_json_raises_only_rejections(raw: bytes | str) -> None:
    try:
        events.parse_json(raw, what="body", max_bytes=MAX_BYTES)
    except RejectedError:
        pass


@fuzz(400)
@given(body=bodies, event_id=st.text(max_size=300), event_time=st.text(max_size=70))
def test_decode_trigger_body(body: Any, event_id: str, event_time: str) -> None:
    trigger = decoded(
        lambda: events.decode_trigger_body(
            body, source="http", event_id=event_id, event_time=event_time
        )
    )
    if trigger is not None:
        check_planned(trigger)


@fuzz(300)
@given(
    message=pubsub_messages,
    subscription=maybe(st.text(max_size=600)),
)
def test_decode_pubsub_push(message: Any, subscription: Any) -> None:
    body = {"message": message, "subscription": subscription}
    trigger = decoded(lambda: events.decode_pubsub_push(body, max_bytes=MAX_BYTES))
    if trigger is not None:
        check_planned(trigger)


@fuzz(300)
@given(body=json_values)
def test_decode_pubsub_push_of_any_json(body: Any) -> None:
    decoded(lambda: events.decode_pubsub_push(body, max_bytes=MAX_BYTES))


@fuzz(400)
@given(event=cloud_events())
def test_decode_cloud_event(event: CloudEvent) -> None:
    trigger = decoded(lambda: events.decode_cloud_event(event, max_bytes=MAX_BYTES))
    if trigger is not None:
        check_planned(trigger)


@fuzz(300)
@given(resource=gcs_objects)
def test_every_finalized_object_is_skipped_refused_or_planned_validly(resource: Any) -> None:
    event = CloudEvent(
        {"type": events.STORAGE_FINALIZED, "source": "//storage.googleapis.com/x", "id": "e"},
        resource,
    )
    trigger = decoded(lambda: events.decode_cloud_event(event, max_bytes=MAX_BYTES))
    if trigger is not None:
        check_planned(trigger)


# --------------------------------------------------------------------------- entry points
