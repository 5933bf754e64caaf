"""Run outcomes and champion reports: how a pipeline tells the trigger what became of a run.

The trigger forgets a run once it is submitted; these messages bring the end back to it without
polling. The mechanism is Google's documented one for acting when a run ends, whatever its state:
a final task under ``dsl.ExitHandler`` that receives the run's ``dsl.PipelineTaskFinalStatus``
(the pattern of Vertex AI's email-notification component,
https://cloud.google.com/vertex-ai/docs/pipelines/email-notifications). It publishes one message
to the route's outcome topic; the trigger's push subscription records it.

Any KFP pipeline reports its runs with two parameters and one ``with`` block::

    from pipeline_specs import reporting

    @dsl.pipeline(name="my-pipeline")
    def my_pipeline(data_uri: str, outcome_topic: str = "", job_id: str = ""):
        with reporting.reported_run(outcome_topic, job_id, reporting.reporter(IMAGE)):
            ...every task of the pipeline...

``outcome_topic`` is a full topic path (``projects/<p>/topics/<t>``; empty: log the report, do
not publish) and ``job_id`` the PipelineJob id the trigger chose, so a report is matched to its
run even where the final status' resource name is not Vertex's (``kfp.local``).

Messages (JSON Schemas in ``schemas/``), published with the attribute ``retrain-message``:

- ``run-outcome`` (:func:`run_outcome_report`, ``schemas/run-outcome.schema.json``): the run's
  final state (SUCCEEDED, FAILED or CANCELLED), its error, its job, once per run;
- ``champion`` (:func:`champion_report`, ``schemas/champion.schema.json``): published by a
  register step when, and only when, it moved the registry's champion.

A report that cannot be published never fails the run: the exit task logs the failure and
succeeds (on Vertex AI a failing exit task would mark the whole run FAILED), and the trigger's
periodic flush reconciles a run whose report never arrived by reading the job. Pub/Sub may
deliver a report twice (a publish retried after a lost response gets a new message id:
https://cloud.google.com/pubsub/docs/retry-requests), so readers key reports by ``job_id``.

Publishing uses google-cloud-pubsub, which talks to the emulator when ``PUBSUB_EMULATOR_HOST`` is
set (https://cloud.google.com/pubsub/docs/emulator). The functions below are copied into the
components that use them (see :mod:`pipeline_specs`), so each imports what it needs itself.
"""

import contextlib
from collections.abc import Callable, Iterator

from kfp import dsl

from pipeline_specs import DEFAULT_IMAGE

OUTCOME_KIND = "retrain-trigger.run-outcome/v1"
CHAMPION_KIND = "retrain-trigger.champion/v1"
MESSAGE_ATTRIBUTE = "retrain-message"
# What `reporter(install=True)` installs when a step starts (the version requirements.txt pins).
PUBSUB_REQUIREMENT = "google-cloud-pubsub==2.44.0"


def rfc3339(moment=None) -> str:
    """``moment`` (an aware datetime; now by default) as RFC 3339 UTC with milliseconds."""
    import datetime

    moment = (moment or datetime.datetime.now(datetime.UTC)).astimezone(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def log_line(severity: str, message: str, **fields) -> None:
    """One JSON line on stdout; Cloud Logging takes ``severity`` and ``message`` from it."""
    import json

    line = {"severity": severity, "message": message, **fields}
    print(json.dumps(line, sort_keys=True, default=str), flush=True)


def publish_report(topic: str, report: dict, message_type: str, deadline: float = 60.0) -> bool:
    """Publish ``report`` as one JSON message on ``topic``; True once Pub/Sub has accepted it.

    Never raises: an empty ``topic`` logs the report instead, and a report that cannot be
    published (bad topic path, missing topic, no permission, Pub/Sub unreachable for
    ``deadline`` seconds of retries, library not installed) is logged at WARNING.
    """
    import json
    import re

    fields = {"retrain_message": message_type, "job_id": report.get("job_id", ""), "topic": topic}
    if not topic:
        log_line("INFO", f"{message_type} report (no outcome_topic: not published)", report=report)
        return False
    try:
        if not re.fullmatch(r"projects/[^/\s]+/topics/[^/\s]+", topic):
            raise ValueError("outcome_topic must be a full topic path projects/<p>/topics/<t>")
        from google.api_core.retry import Retry
        from google.cloud import pubsub_v1

        publisher = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=1)
        )
        data = json.dumps(report, sort_keys=True, separators=(",", ":")).encode()
        future = publisher.publish(
            topic,
            data,
            retry=Retry(initial=0.25, maximum=8.0, multiplier=2.0, timeout=deadline),
            timeout=min(deadline, 20.0),
            **{"retrain-message": message_type},
        )
        message_id = future.result(timeout=deadline + 10.0)
    except Exception as exc:
        problem = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        log_line(
            "WARNING",
            f"{message_type} report not published ({problem}); the trigger's reconciliation "
            "covers a lost report",
            report=report,
            **fields,
        )
        return False
    log_line("INFO", f"{message_type} report published", message_id=message_id, **fields)
    return True


def run_outcome_report(
    state, job_resource_name, error_code, error_message, job_id: str, reporter: str
) -> dict:
    """The run-outcome message for a final status (``schemas/run-outcome.schema.json``).

    The state is normalised to SUCCEEDED, FAILED or CANCELLED; anything else is reported as
    FAILED with the state it had in the error message.
    """
    raw = str(state or "").strip().upper().removeprefix("PIPELINE_STATE_")
    if raw == "CANCELED":
        raw = "CANCELLED"
    message = str(error_message or "")
    if raw not in ("SUCCEEDED", "FAILED", "CANCELLED"):
        unknown = f"final status state {state!r} is not SUCCEEDED, FAILED or CANCELLED"
        message = f"{unknown}: {message}" if message else unknown
        raw = "FAILED"
    try:
        code = int(error_code or 0)
    except (TypeError, ValueError):
        code = 0
    return {
        "kind": "retrain-trigger.run-outcome/v1",
        "job_id": str(job_id or ""),
        "job": str(job_resource_name or ""),
        "state": raw,
        "error": {"code": code, "message": message},
        "reported_at": rfc3339(),
        "reporter": reporter,
    }


def champion_report(
    job_id: str,
    job: str,
    model_uri: str,
    version: str,
    metric_name: str,
    metric_value: float,
    previous_version: str,
    previous_value,
    commit_sha: str,
    image_uri: str,
    registered_at: str,
) -> dict:
    """The champion message (``schemas/champion.schema.json``); ``previous`` is null for the
    registry's first champion."""
    previous = None
    if previous_version:
        previous = {
            "version": previous_version,
            "metric": {
                "name": metric_name,
                "value": None if previous_value is None else float(previous_value),
            },
        }
    return {
        "kind": "retrain-trigger.champion/v1",
        "job_id": str(job_id or ""),
        "job": str(job or ""),
        "model_uri": model_uri,
        "version": version,
        "metric": {"name": metric_name, "value": float(metric_value)},
        "previous": previous,
        "commit_sha": commit_sha,
        "image_uri": image_uri,
        "registered_at": registered_at,
    }


def report_run_outcome(
    status: dsl.PipelineTaskFinalStatus, outcome_topic: str = "", job_id: str = ""
):
    """Exit task: publish the run's final status to ``outcome_topic`` (log it when empty).

    Always succeeds, whatever happens to the report: a failing exit task would turn the run
    itself FAILED, and a lost report is reconciled by the trigger reading the job.
    """
    try:
        report = run_outcome_report(
            status.state,
            status.pipeline_job_resource_name,
            status.error_code,
            status.error_message,
            job_id,
            "exit-handler",
        )
        publish_report(outcome_topic, report, "run-outcome")
    except Exception as exc:
        log_line("ERROR", f"run outcome not reported: {type(exc).__name__}: {exc}", job_id=job_id)


# Copied next to report_run_outcome, and next to a register step that publishes champions.
REPORTER_HELPERS: tuple[Callable, ...] = (rfc3339, log_line, publish_report, run_outcome_report)
CHAMPION_HELPERS: tuple[Callable, ...] = (rfc3339, log_line, publish_report, champion_report)


def reporter(base_image: str = DEFAULT_IMAGE, *, install: bool = False):
    """The ``report-run-outcome`` component on ``base_image``.

    By default nothing is installed when it starts: the image must carry ``kfp`` and
    ``google-cloud-pubsub`` (``pipeline_specs/Dockerfile`` does). With ``install=True`` the step
    installs both first, for an image that has neither (it then needs a package index).
    """
    return dsl.component(
        report_run_outcome,
        base_image=base_image,
        packages_to_install=[PUBSUB_REQUIREMENT] if install else [],
        install_kfp_package=install,
        additional_funcs=list(REPORTER_HELPERS),
    )


@contextlib.contextmanager
def reported_run(outcome_topic, job_id, component=None) -> Iterator[dsl.PipelineTask]:
    """Inside a ``@dsl.pipeline`` function: every task created in the ``with`` block is watched
    by a ``report-run-outcome`` exit task (``component``, default :func:`reporter`), which runs
    when they have all ended, however they ended. Its cache is off: a report is never replayed.

    ``outcome_topic`` and ``job_id`` are the pipeline's own parameters of those names.
    Pipeline outputs cannot come from tasks inside an exit handler (a KFP rule): a reporting
    pipeline leaves its results in its tasks' outputs and artifacts.
    """
    task = (component or reporter())(outcome_topic=outcome_topic, job_id=job_id)
    task.set_caching_options(False)
    with dsl.ExitHandler(task):
        yield task
