"""Event entry point: new data in GCS (Eventarc object-finalize CloudEvents, or GCS
notifications through Pub/Sub), Cloud Build status messages, and their replays.

Deploy with ``--entry-point retrain_event`` and retries enabled. Returning acknowledges the event;
raising (only when a submission failed) makes the platform redeliver it.
"""

import functions_framework
from cloudevents.http import CloudEvent

from retrain_trigger.entrypoints import answer_event


@functions_framework.cloud_event
def retrain_event(cloud_event: CloudEvent) -> None:
    answer_event(cloud_event)
