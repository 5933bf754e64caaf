"""Event entry point: new data in GCS (Eventarc object-finalize CloudEvents, or GCS
notifications through Pub/Sub), Cloud Build status messages, and their replays.

Deploy with ``--entry-point retrain_event`` and retries enabled. Returning acknowledges the event;
raising (only when a submission failed) makes the platform redeliver it.
"""

import functions_framework
from cloudevents.http import CloudEvent

from retrain_trigger.entrypoints import answer_event, install_event_screen


@functions_framework.cloud_event
def retrain_event(cloud_event: CloudEvent) -> None:
    answer_event(cloud_event)


# functions-framework runs this module inside the app it is creating: put our screen ahead of its
# CloudEvent parsing, so malformed envelopes and raw Pub/Sub push bodies reach our code first.
install_event_screen()
