# Monitoring as code (enable_monitoring = true): log-based metrics from the functions' structured
# log lines, alert policies on them and on the platform's own metrics, and one dashboard
# (dashboards/retrain-trigger.json.tftpl). README.md "Operations > Monitoring and alerts" says
# what each one means and what to do when it fires.
#
# What the functions log (one JSON line per event on stdout; Cloud Run makes each a LogEntry of
# resource type cloud_run_revision, log run.googleapis.com/stdout, the line under jsonPayload):
#   decision lines      jsonPayload.event = "decision": decision, route, code, latency_ms,
#                       event_age_ms (decision time minus the event's own time)
#   run outcome lines   jsonPayload.event = "run_outcome": route, job_id, run_state
#                       (SUCCEEDED | FAILED | CANCELLED), duration_seconds, error, reporter
#   window overdue      jsonPayload.event = "window_overdue": route, window_id, age_seconds
#   champion lines      jsonPayload.event = "champion_changed": route, job_id, version
#
# Log-based metrics: https://cloud.google.com/logging/docs/logs-based-metrics
#   (counters and distributions, label and value extractors:
#   https://cloud.google.com/logging/docs/logs-based-metrics/labels,
#   https://cloud.google.com/logging/docs/logs-based-metrics/distribution-metrics;
#   the resource: https://registry.terraform.io/providers/hashicorp/google/latest/docs/resources/logging_metric)
# Alert policies: https://cloud.google.com/monitoring/alerts/types-of-conditions
#   (documentation variables such as ${log.extracted_label.KEY}:
#   https://cloud.google.com/monitoring/alerts/doc-variables)
#   (https://registry.terraform.io/providers/hashicorp/google/latest/docs/resources/monitoring_alert_policy)
# Dashboards: https://cloud.google.com/monitoring/api/ref_v3/rest/v1/projects.dashboards
#   (https://registry.terraform.io/providers/hashicorp/google/latest/docs/resources/monitoring_dashboard)
#
# Labels hold bounded values only (route, outcome, code, state, reporter): object names and job
# ids would make a time series per event. Every metric is DELTA: the count or the values of the
# matching entries in each interval.

locals {
  # Metric names take the prefix with "_" so that their PromQL names are predictable:
  # logging.googleapis.com/user/<name> is logging_googleapis_com:user_<name>
  # (https://cloud.google.com/monitoring/promql/promql-mapping).
  metric_prefix = replace(var.name_prefix, "-", "_")

  functions_log_filter = join(" AND ", [
    "resource.type=\"cloud_run_revision\"",
    "resource.labels.service_name=(\"${var.http_function_name}\" OR \"${var.event_function_name}\")",
    "logName=\"projects/${var.project_id}/logs/run.googleapis.com%2Fstdout\"",
  ])
  decision_filter = "${local.functions_log_filter} AND jsonPayload.event=\"decision\""
  outcome_filter  = "${local.functions_log_filter} AND jsonPayload.event=\"run_outcome\""

  alert_display_prefix = "retrain-trigger ${var.name_prefix}"
  runbook              = "README.md of retrain-trigger, section \"Operations > Monitoring and alerts\""
}

# --- log-based metrics -------------------------------------------------------------------------

resource "google_logging_metric" "decisions" {
  count = var.enable_monitoring ? 1 : 0

  project     = var.project_id
  name        = "${local.metric_prefix}_decisions"
  description = "retrain-trigger: decisions (one per event) by route and outcome."
  filter      = local.decision_filter

  label_extractors = {
    route   = "EXTRACT(jsonPayload.route)"
    outcome = "EXTRACT(jsonPayload.decision)"
  }

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "retrain-trigger decisions"

    labels {
      key         = "route"
      value_type  = "STRING"
      description = "Route the event matched (empty for input rejected before routing)."
    }

    labels {
      key         = "outcome"
      value_type  = "STRING"
      description = "submitted, duplicate, batched, skipped, rejected or failed."
    }
  }
}

resource "google_logging_metric" "event_to_submit_latency" {
  count = var.enable_monitoring ? 1 : 0

  project         = var.project_id
  name            = "${local.metric_prefix}_event_to_submit_latency"
  description     = "retrain-trigger: time from an event (its own timestamp) to the submission of its run, per route."
  filter          = "${local.decision_filter} AND jsonPayload.decision=\"submitted\" AND jsonPayload.event_age_ms:*"
  value_extractor = "EXTRACT(jsonPayload.event_age_ms)"

  label_extractors = {
    route = "EXTRACT(jsonPayload.route)"
  }

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "ms"
    display_name = "retrain-trigger event-to-submit latency"

    labels {
      key         = "route"
      value_type  = "STRING"
      description = "Route of the submitted run."
    }
  }

  # 100 ms, 200 ms, ... doubling: the last finite bucket starts at 100 ms * 2^23, about 9.7 days,
  # beyond any batch window's max_wait_seconds.
  bucket_options {
    exponential_buckets {
      num_finite_buckets = 24
      growth_factor      = 2
      scale              = 100
    }
  }
}

resource "google_logging_metric" "rejected_inputs" {
  count = var.enable_monitoring ? 1 : 0

  project     = var.project_id
  name        = "${local.metric_prefix}_rejected_inputs"
  description = "retrain-trigger: events rejected as input that can never succeed, by error code."
  filter      = "${local.decision_filter} AND jsonPayload.decision=\"rejected\""

  label_extractors = {
    code  = "EXTRACT(jsonPayload.code)"
    route = "EXTRACT(jsonPayload.route)"
  }

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "retrain-trigger rejected inputs"

    labels {
      key         = "code"
      value_type  = "STRING"
      description = "Error code of the rejection."
    }

    labels {
      key         = "route"
      value_type  = "STRING"
      description = "Route, when the input got that far (often empty)."
    }
  }
}

resource "google_logging_metric" "run_outcomes" {
  count = var.enable_monitoring ? 1 : 0

  project     = var.project_id
  name        = "${local.metric_prefix}_run_outcomes"
  description = "retrain-trigger: pipeline runs reaching a terminal state, by route and state."
  filter      = local.outcome_filter

  label_extractors = {
    route    = "EXTRACT(jsonPayload.route)"
    state    = "EXTRACT(jsonPayload.run_state)"
    reporter = "EXTRACT(jsonPayload.reporter)"
  }

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "retrain-trigger run outcomes"

    labels {
      key         = "route"
      value_type  = "STRING"
      description = "Route of the run."
    }

    labels {
      key         = "state"
      value_type  = "STRING"
      description = "SUCCEEDED, FAILED or CANCELLED."
    }

    labels {
      key         = "reporter"
      value_type  = "STRING"
      description = "exit-handler, local-worker or reconcile (the flush found the end by GET)."
    }
  }
}

resource "google_logging_metric" "run_durations" {
  count = var.enable_monitoring ? 1 : 0

  project         = var.project_id
  name            = "${local.metric_prefix}_run_durations"
  description     = "retrain-trigger: pipeline run durations (submit to end), by route and state."
  filter          = "${local.outcome_filter} AND jsonPayload.duration_seconds:*"
  value_extractor = "EXTRACT(jsonPayload.duration_seconds)"

  label_extractors = {
    route = "EXTRACT(jsonPayload.route)"
    state = "EXTRACT(jsonPayload.run_state)"
  }

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "s"
    display_name = "retrain-trigger run durations"

    labels {
      key         = "route"
      value_type  = "STRING"
      description = "Route of the run."
    }

    labels {
      key         = "state"
      value_type  = "STRING"
      description = "SUCCEEDED, FAILED or CANCELLED."
    }
  }

  # 30 s, 60 s, ... doubling: the last finite bucket starts at 30 s * 2^15, about 11 days.
  bucket_options {
    exponential_buckets {
      num_finite_buckets = 16
      growth_factor      = 2
      scale              = 30
    }
  }
}

resource "google_logging_metric" "windows_overdue" {
  count = var.enable_monitoring ? 1 : 0

  project     = var.project_id
  name        = "${local.metric_prefix}_windows_overdue"
  description = "retrain-trigger: batch windows still open past their route's max_wait_seconds (one line per window per flush)."
  filter      = "${local.functions_log_filter} AND jsonPayload.event=\"window_overdue\""

  label_extractors = {
    route = "EXTRACT(jsonPayload.route)"
  }

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "retrain-trigger overdue windows"

    labels {
      key         = "route"
      value_type  = "STRING"
      description = "Route of the window."
    }
  }
}

resource "google_logging_metric" "champion_changes" {
  count = var.enable_monitoring ? 1 : 0

  project     = var.project_id
  name        = "${local.metric_prefix}_champion_changes"
  description = "retrain-trigger: new champion models registered, by route."
  filter      = "${local.functions_log_filter} AND jsonPayload.event=\"champion_changed\""

  label_extractors = {
    route = "EXTRACT(jsonPayload.route)"
  }

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "retrain-trigger champion changes"

    labels {
      key         = "route"
      value_type  = "STRING"
      description = "Route whose champion changed."
    }
  }
}

# --- alert policies ----------------------------------------------------------------------------

# A log-match condition: one incident per FAILED run_outcome line, naming its route and job. Log-
# based alert policies need a notification rate limit, and close themselves (auto_close).
# https://cloud.google.com/logging/docs/alerting/log-based-alerts
resource "google_monitoring_alert_policy" "failed_runs" {
  count = var.enable_monitoring ? 1 : 0

  project               = var.project_id
  display_name          = "${local.alert_display_prefix}: pipeline run failed"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = var.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "run_outcome line with run_state FAILED"

    condition_matched_log {
      filter = "${local.outcome_filter} AND jsonPayload.run_state=\"FAILED\""
      label_extractors = {
        route    = "EXTRACT(jsonPayload.route)"
        job_id   = "EXTRACT(jsonPayload.job_id)"
        reporter = "EXTRACT(jsonPayload.reporter)"
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"

    notification_rate_limit {
      period = "300s"
    }
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "retrain-trigger: a ${var.name_prefix} pipeline run failed"
    content   = <<-EOT
      A pipeline run of route $${log.extracted_label.route} ended FAILED (job $${log.extracted_label.job_id}).
      The log entry holds its error. Look: `retrain-trigger why <object>` or `retrain-trigger runs`,
      and the job in Vertex AI > Pipelines. Fix the cause (code, data, quota), then rerun with
      `force` or let the next change start a new run. Runbook: ${local.runbook}.
    EOT
  }
}

# The dead-letter subscriptions of both push subscriptions hold messages that failed
# max_delivery_attempts times; any at all is a lost event or outcome until someone acts.
# https://cloud.google.com/pubsub/docs/monitoring#monitor_the_backlog
resource "google_monitoring_alert_policy" "dead_letter_backlog" {
  count = var.enable_monitoring ? 1 : 0

  project               = var.project_id
  display_name          = "${local.alert_display_prefix}: dead-lettered messages"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = var.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "undelivered messages in a dead-letter subscription above 0"

    condition_threshold {
      filter          = "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND resource.type=\"pubsub_subscription\" AND resource.label.subscription_id=one_of(\"${google_pubsub_subscription.dead_letter.name}\", \"${google_pubsub_subscription.outcomes_dead_letter.name}\")"
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_MAX"
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "604800s"
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "retrain-trigger: messages dead-lettered in ${var.name_prefix}"
    content   = <<-EOT
      A push subscription gave up on a message after max_delivery_attempts deliveries: a data
      event or a run outcome is waiting in a dead-letter subscription. Inspect it without
      acknowledging (`gcloud pubsub subscriptions pull <subscription> --limit 10`), read the
      event function's ERROR lines of the same time, fix the cause and republish (docs/deploy.md,
      "Replaying events"). Runbook: ${local.runbook}.
    EOT
  }
}

# 5xx answers of either function, as a share of its requests: Cloud Run's own request metric.
# A ratio condition names the denominator's filter and aggregates both sides alike.
# https://cloud.google.com/monitoring/api/metrics_gcp#gcp-run (request_count, response_code_class)
# https://cloud.google.com/monitoring/api/ref_v3/rest/v3/projects.alertPolicies#metricthreshold
resource "google_monitoring_alert_policy" "function_5xx" {
  count = var.enable_monitoring ? 1 : 0

  project               = var.project_id
  display_name          = "${local.alert_display_prefix}: functions answering 5xx"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = var.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "share of 5xx responses per function above ${var.alert_5xx_ratio}"

    condition_threshold {
      filter                  = "metric.type=\"run.googleapis.com/request_count\" AND resource.type=\"cloud_run_revision\" AND resource.label.service_name=one_of(\"${var.http_function_name}\", \"${var.event_function_name}\") AND metric.label.response_code_class=\"5xx\""
      denominator_filter      = "metric.type=\"run.googleapis.com/request_count\" AND resource.type=\"cloud_run_revision\" AND resource.label.service_name=one_of(\"${var.http_function_name}\", \"${var.event_function_name}\")"
      comparison              = "COMPARISON_GT"
      threshold_value         = var.alert_5xx_ratio
      duration                = "0s"
      evaluation_missing_data = "EVALUATION_MISSING_DATA_INACTIVE"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.label.service_name"]
      }

      denominator_aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.label.service_name"]
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "retrain-trigger: ${var.name_prefix} functions answering 5xx"
    content   = <<-EOT
      More than ${var.alert_5xx_ratio * 100} % of a function's requests answered 5xx in 5 minutes.
      The event function answers 5xx on purpose for retryable failures (Vertex 429/5xx, timeouts,
      missing permissions), so Pub/Sub redelivers; persistent 5xx end in the dead-letter
      subscription. Read the function's ERROR decision lines (`jsonPayload.decision="failed"`),
      fix what they name, and watch the backlog drain. Runbook: ${local.runbook}.
    EOT
  }
}

# No SUCCEEDED run of a route for alert_no_success_days. A metric-absence condition cannot
# say this: its duration window is at most 24.5 hours through the API
# (https://cloud.google.com/monitoring/alerts/types-of-conditions#metric-absence), and a metric
# threshold's alignment period is bounded as well. A PromQL condition reads up to 2 years of
# data (https://cloud.google.com/monitoring/alerts/using-promql): routes that made decisions in
# the last alert_route_activity_days, unless they had a SUCCEEDED run in the last
# alert_no_success_days. A route that makes no decision at all for the longer window leaves
# the watched set (it is not in use).
resource "google_monitoring_alert_policy" "no_success" {
  count = var.enable_monitoring ? 1 : 0

  project               = var.project_id
  display_name          = "${local.alert_display_prefix}: no successful run of a route in ${var.alert_no_success_days} days"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = var.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "route active in ${var.alert_route_activity_days} days without a SUCCEEDED run in ${var.alert_no_success_days} days"

    # disable_metric_validation: on the first apply the log-based metrics above are only just
    # created; their names are held against this query by tests/deploy/test_monitoring.py.
    condition_prometheus_query_language {
      disable_metric_validation = true
      query                     = "(sum by (route) (increase(logging_googleapis_com:user_${local.metric_prefix}_decisions{monitored_resource=\"cloud_run_revision\",route!=\"\"}[${var.alert_route_activity_days}d])) > 0) unless on (route) (sum by (route) (increase(logging_googleapis_com:user_${local.metric_prefix}_run_outcomes{monitored_resource=\"cloud_run_revision\",state=\"SUCCEEDED\"}[${var.alert_no_success_days}d])) > 0)"
      duration                  = "0s"
      evaluation_interval       = "600s"
    }
  }

  alert_strategy {
    auto_close = "604800s"
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "retrain-trigger: a ${var.name_prefix} route has not retrained successfully for ${var.alert_no_success_days} days"
    content   = <<-EOT
      A route made decisions within ${var.alert_route_activity_days} days but has had no SUCCEEDED
      run for ${var.alert_no_success_days} days: its model is getting stale. Check whether runs
      fail (the failed-run alert, `retrain-trigger runs`), whether data stopped arriving or is
      skipped (`retrain-trigger decisions --since 7d`), or whether the route is paused.
      Runbook: ${local.runbook}.
    EOT
  }

  depends_on = [google_logging_metric.decisions, google_logging_metric.run_outcomes]
}

# Each flush logs one window_overdue line for every window still open past its route's
# max_wait_seconds (plus two flush periods): the flush is not running, or cannot close it.
resource "google_monitoring_alert_policy" "windows_overdue" {
  count = var.enable_monitoring ? 1 : 0

  project               = var.project_id
  display_name          = "${local.alert_display_prefix}: batch windows open past max_wait_seconds"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = var.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "window_overdue lines per route above 0"

    condition_threshold {
      filter                  = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.windows_overdue[0].name}\" AND resource.type=\"cloud_run_revision\""
      comparison              = "COMPARISON_GT"
      threshold_value         = 0
      duration                = "0s"
      evaluation_missing_data = "EVALUATION_MISSING_DATA_INACTIVE"

      aggregations {
        alignment_period     = "600s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.route"]
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "retrain-trigger: ${var.name_prefix} batch windows overdue"
    content   = <<-EOT
      A batch window stayed open longer than its route's max_wait_seconds: its data waits for a
      run. Check that Cloud Scheduler's flush job runs and succeeds (its calls to /flush, the
      HTTP function's logs), list the open windows (`retrain-trigger windows`), and close them
      by hand if needed (`retrain-trigger flush --now`). Runbook: ${local.runbook}.
    EOT
  }
}

# --- dashboard ---------------------------------------------------------------------------------

resource "google_monitoring_dashboard" "this" {
  count = var.enable_monitoring ? 1 : 0

  project = var.project_id
  # Placeholders hold plain names, except problems_log_filter: a whole filter, JSON-encoded.
  dashboard_json = templatefile("${path.module}/dashboards/retrain-trigger.json.tftpl", {
    title                 = "retrain-trigger ${var.name_prefix}"
    http_function         = var.http_function_name
    event_function        = var.event_function_name
    decisions_metric      = "logging.googleapis.com/user/${google_logging_metric.decisions[0].name}"
    latency_metric        = "logging.googleapis.com/user/${google_logging_metric.event_to_submit_latency[0].name}"
    rejected_metric       = "logging.googleapis.com/user/${google_logging_metric.rejected_inputs[0].name}"
    outcomes_metric       = "logging.googleapis.com/user/${google_logging_metric.run_outcomes[0].name}"
    durations_metric      = "logging.googleapis.com/user/${google_logging_metric.run_durations[0].name}"
    overdue_metric        = "logging.googleapis.com/user/${google_logging_metric.windows_overdue[0].name}"
    champions_metric      = "logging.googleapis.com/user/${google_logging_metric.champion_changes[0].name}"
    events_dead_letter    = google_pubsub_subscription.dead_letter.name
    outcomes_dead_letter  = google_pubsub_subscription.outcomes_dead_letter.name
    events_subscription   = local.push_delivery ? google_pubsub_subscription.push[0].name : ""
    outcomes_subscription = google_pubsub_subscription.outcomes_push.name
    problems_log_filter   = jsonencode("${local.functions_log_filter} AND severity>=WARNING")
  })
}
