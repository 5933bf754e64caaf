"""One base exception, with subclasses that map onto the outcomes in the design.

- ``ConfigError``: the configuration is wrong; found at start-up wherever possible.
- ``RejectedError``: input that can never succeed. HTTP answers its ``status``; the event
  entry point logs it at ERROR and acknowledges (retrying cannot help).
- ``SubmitError``: the run could not be started (``StoreError``: its state could not be kept). ``retryable`` failures (429, 5xx, timeouts)
  answer 503 and make the event entry point raise so the platform redelivers; failures an
  operator must fix (permission, missing template) answer 502 and also raise, so nothing is lost.
"""

from __future__ import annotations


class RetrainError(Exception):
    """Base class of every error raised by retrain-trigger."""


class ConfigError(RetrainError):
    """The configuration is invalid. ``str()`` names the file, the field and the problem.

    The three parts are kept apart (``source``, ``field``, ``message``): code that learns more
    about where an error lies re-raises it with :meth:`located`, never by editing the text.
    """

    def __init__(self, message: str, *, source: str = "", field: str = "") -> None:
        self.message = message
        self.source = source
        self.field = field
        where = ": ".join(part for part in (source, field) if part)
        super().__init__(f"{where}: {message}" if where else message)

    def located(self, *, source: str | None = None, field: str | None = None) -> ConfigError:
        """The same problem, named in another file or field (unchanged where not given)."""
        return ConfigError(
            self.message,
            source=self.source if source is None else source,
            field=self.field if field is None else field,
        )


class RejectedError(RetrainError):
    """Input that can never succeed: malformed, oversized, unauthenticated, unknown route."""

    status: int = 400
    code: str = "invalid_input"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code


class InvalidEvent(RejectedError):
    status = 400
    code = "invalid_event"


class Unauthenticated(RejectedError):
    status = 401
    code = "unauthenticated"


class Forbidden(RejectedError):
    status = 403
    code = "forbidden"


class PayloadTooLarge(RejectedError):
    status = 413
    code = "payload_too_large"


class Unprocessable(RejectedError):
    """Well-formed input that names something this deployment does not accept."""

    status = 422
    code = "unprocessable"


class SubmitError(RetrainError):
    """Starting the run failed. ``retryable`` tells whether the same call may succeed later."""

    retryable: bool = True

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable

    @property
    def status(self) -> int:
        return 503 if self.retryable else 502


class BackendUnavailable(SubmitError):
    """429, 5xx, timeouts, connection errors: the platform should redeliver later."""

    retryable = True


class BackendRefused(SubmitError):
    """Permission denied, invalid argument, missing template: an operator must act."""

    retryable = False


class TemplateError(SubmitError):
    """The compiled pipeline template cannot be read or does not match the parameters."""

    retryable = False


class CertificatesUnavailable(BackendUnavailable):
    """The ID token certificates could not be fetched: answered 503, the caller retries."""


class StoreError(SubmitError):
    """The state store could not be read or written (busy, unavailable, contended).

    Retryable unless said otherwise: the event entry point raises and the platform redelivers
    the event later.
    """

    retryable = True


class EventNotProcessed(RetrainError):
    """Raised from the event function so the platform retries the delivery."""
