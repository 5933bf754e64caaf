"""HTTP entry point: code and base-model changes (Cloud Build, curl with an ID token).

Deploy with ``--entry-point retrain_http``. All logic lives in the ``retrain_trigger`` core; this
module only adapts the request. Nothing is initialised at import time.
"""

import flask
import functions_framework

from retrain_trigger.entrypoints import answer_http


@functions_framework.http
def retrain_http(request: flask.Request) -> flask.Response:
    return answer_http(request)
