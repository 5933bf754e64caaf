"""The retry policy of every Vertex AI call, as ``google.api_core.retry.Retry``.

As python-storage's ``retry.py`` does: a predicate over the errors a retry can fix, 429, 500, 502,
503, 504 (``google.api_core.exceptions``), connection errors and timeouts (``requests``), and a
token refresh that failed on the network; plus 409 ABORTED (a concurrency conflict, not an
existing job). Each retry sleeps ``uniform(0, backoff)`` (full jitter), the backoff starting at
:data:`INITIAL_BACKOFF` and doubling up to :data:`MAXIMUM_BACKOFF`, and the policy gives up when
the next sleep would end past the deadline. Only idempotent calls are retried: creating a
PipelineJob with a caller-chosen id is (a second create answers 409 and starts nothing).
https://cloud.google.com/python/docs/reference/google-api-core/latest/retry

``google.api_core`` and ``requests`` are imported when a policy is first built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from google.api_core.retry import Retry

# Backoff of the retry policy (seconds): 0.5, 1, 2, 4, 8, 8 ... each with full jitter.
INITIAL_BACKOFF = 0.5
MAXIMUM_BACKOFF = 8.0
BACKOFF_MULTIPLIER = 2.0


def retryable_types() -> tuple[type[Exception], ...]:
    import requests
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    return (
        gexc.TooManyRequests,  # 429 (ResourceExhausted on gRPC)
        gexc.InternalServerError,  # 500
        gexc.BadGateway,  # 502
        gexc.ServiceUnavailable,  # 503 (Unavailable on gRPC)
        gexc.GatewayTimeout,  # 504 (DeadlineExceeded on gRPC)
        requests.exceptions.ConnectionError,  # refused, reset, DNS
        requests.exceptions.Timeout,  # includes ReadTimeout
        requests.exceptions.ChunkedEncodingError,  # connection broken mid-answer
        ConnectionError,
        auth_exc.TransportError,  # refreshing the access token failed on the network
    )


def rpc_status(exc: BaseException) -> str:
    """The google.rpc.Code name of an API error (``ALREADY_EXISTS``, ``ABORTED`` ...), or ""."""
    grpc_code = getattr(exc, "grpc_status_code", None)
    if grpc_code is not None:
        return str(getattr(grpc_code, "name", grpc_code))
    response = getattr(exc, "response", None)
    try:
        payload = response.json() if response is not None else None
    except ValueError:
        return ""
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        return str(payload["error"].get("status", ""))
    return ""


def _is_aborted(exc: BaseException) -> bool:
    from google.api_core import exceptions as gexc

    return isinstance(exc, gexc.Conflict) and (
        isinstance(exc, gexc.Aborted) or rpc_status(exc) == "ABORTED"
    )


def retry_policy(deadline: float, on_error: Callable[[BaseException], None] | None = None) -> Retry:
    """The retry policy of every Vertex call: transient errors only, within ``deadline`` seconds.

    ``google.api_core.retry.Retry`` sleeps ``uniform(0, backoff)`` between attempts (full
    jitter) and gives up, raising ``RetryError``, when the next sleep would pass the deadline.
    """
    from google.api_core.retry import Retry, if_exception_type

    is_transient = if_exception_type(*retryable_types())

    def predicate(exc: Exception) -> bool:
        return is_transient(exc) or _is_aborted(exc)

    return Retry(
        predicate=predicate,
        initial=INITIAL_BACKOFF,
        maximum=MAXIMUM_BACKOFF,
        multiplier=BACKOFF_MULTIPLIER,
        timeout=max(deadline, 0.0),
        on_error=on_error,
    )
