"""The local stack's pipeline worker process: runs the local backend's queued runs until stopped.

    python -m retrain_trigger_dev.localstack.worker [--config PATH]

SIGTERM or SIGINT asks the worker to stop; the local backend decides what happens to a run in
progress (the stack signals the worker's whole process group, so its pipeline steps get the same
signal).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retrain_trigger_dev.localstack.worker")
    parser.add_argument(
        "--config", default=None, help="configuration file (default: $RETRAIN_CONFIG)"
    )
    parser.add_argument(
        "--outcome-topic",
        default="",
        help="report each run's end to this topic (projects/<p>/topics/<t>)",
    )
    parser.add_argument(
        "--outcome-push-url",
        default="",
        help="without the Pub/Sub emulator: POST the push body to <URL>/<topic> instead",
    )
    args = parser.parse_args(argv)

    from retrain_trigger.config import load_config
    from retrain_trigger.decisions import setup_logging
    from retrain_trigger.errors import ConfigError

    setup_logging(sys.stderr)
    stop = threading.Event()

    def request_stop(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        sys.stderr.write(f"worker: {exc}\n")
        return 2

    from retrain_trigger_dev.local.backend import run_worker

    options = {}
    if args.outcome_topic:
        from retrain_trigger_dev.local import outcomes
        from retrain_trigger_dev.local.ledger import Ledger

        deliver: outcomes.Deliver
        if args.outcome_push_url:
            deliver = outcomes.PushDelivery(args.outcome_push_url, args.outcome_topic)
        else:
            deliver = outcomes.PubSubDelivery(args.outcome_topic)
        options["reporter"] = outcomes.OutcomeReporter(
            Ledger.for_state_dir(config.state_dir), deliver
        )
    run_worker(config, stop, **options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
