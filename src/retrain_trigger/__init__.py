"""retrain-trigger: start exactly one Vertex AI pipeline run per change of data, code or base model.

The public surface is small on purpose; everything else lives in private-by-convention modules.
Nothing heavy is imported here: entry points must start fast.
"""

from retrain_trigger.errors import (
    ConfigError,
    RejectedError,
    RetrainError,
    SubmitError,
)
from retrain_trigger.model import Decision, Outcome, RunHandle, RunRequest, Trigger

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Decision",
    "Outcome",
    "RejectedError",
    "RetrainError",
    "RunHandle",
    "RunRequest",
    "SubmitError",
    "Trigger",
    "__version__",
]
