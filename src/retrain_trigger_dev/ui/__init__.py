"""``retrain-trigger ui``: a read-only status page over the decision history, batch windows, the
queue, runs and the champion (Flask; one module, :mod:`.data`, holds every read)."""

from __future__ import annotations

from retrain_trigger_dev.ui.app import app_from_config, create_app
from retrain_trigger_dev.ui.data import StatusData

__all__ = ["StatusData", "app_from_config", "create_app"]
