output "http_function_url" {
  description = "URL (Cloud Run) of the HTTP function: the audience of its ID tokens."
  value       = google_cloudfunctions2_function.http.service_config[0].uri
}

output "http_audience" {
  description = "Audience (and URL) for ID tokens sent to the HTTP function: what RETRAIN_AUDIENCE is set to."
  value       = local.http_audience
}

output "event_function_url" {
  description = "URL (Cloud Run) of the event function: the push endpoint and OIDC audience."
  value       = google_cloudfunctions2_function.event.service_config[0].uri
}

output "data_bucket" {
  description = "Bucket whose new objects (under data_prefixes) start retraining runs."
  value       = local.buckets.data
}

output "buckets" {
  description = "Every bucket by role: data, artifacts, templates, sources, and access_logs when any bucket is created here."
  value       = merge(local.buckets, length(google_storage_bucket.access_logs) > 0 ? { access_logs = google_storage_bucket.access_logs[0].name } : {})
}

output "pipeline_root" {
  description = "Pipeline root to put in the configuration's routes."
  value       = local.pipeline_root
}

output "model_registry_uri" {
  description = "Folder of registered models written by the pipeline."
  value       = local.registry_uri
}

output "template_base_uri" {
  description = "Cloud Build uploads each commit's template under <this>/<commit>/; use it in allowed_templates."
  value       = "${local.template_base}/"
}

output "events_topic" {
  description = "Topic of the data bucket's object notifications (republish here to replay)."
  value       = google_pubsub_topic.events.id
}

output "push_subscription" {
  description = "Push subscription delivering to the event function (seek it to replay)."
  value       = local.push_delivery ? google_pubsub_subscription.push[0].id : null
}

output "dead_letter_topic" {
  description = "Topic of messages the event function failed on max_delivery_attempts times."
  value       = google_pubsub_topic.dead_letter.id
}

output "dead_letter_subscription" {
  description = "Pull subscription of the dead-letter topic (messages kept 7 days)."
  value       = google_pubsub_subscription.dead_letter.id
}

output "outcome_topic" {
  description = "Topic the pipelines' exit tasks publish run outcomes and champion changes to (projects/<p>/topics/<t>): give it to the pipeline as a parameter."
  value       = google_pubsub_topic.outcomes.id
}

output "outcome_push_subscription" {
  description = "Push subscription delivering run outcomes to the event function (seek it to replay)."
  value       = google_pubsub_subscription.outcomes_push.id
}

output "outcome_dead_letter_subscription" {
  description = "Pull subscription of run outcomes the event function failed on max_delivery_attempts times (kept 7 days)."
  value       = google_pubsub_subscription.outcomes_dead_letter.id
}

output "notification_topic" {
  description = "Topic of run-ended and champion-changed notifications: subscribe to it to wire chat or e-mail."
  value       = google_pubsub_topic.notifications.id
}

output "log_metrics" {
  description = "Log-based metric types by key (logging.googleapis.com/user/<name>), for charts and alerts of your own (enable_monitoring only)."
  value = var.enable_monitoring ? {
    decisions               = "logging.googleapis.com/user/${google_logging_metric.decisions[0].name}"
    event_to_submit_latency = "logging.googleapis.com/user/${google_logging_metric.event_to_submit_latency[0].name}"
    rejected_inputs         = "logging.googleapis.com/user/${google_logging_metric.rejected_inputs[0].name}"
    run_outcomes            = "logging.googleapis.com/user/${google_logging_metric.run_outcomes[0].name}"
    run_durations           = "logging.googleapis.com/user/${google_logging_metric.run_durations[0].name}"
    windows_overdue         = "logging.googleapis.com/user/${google_logging_metric.windows_overdue[0].name}"
    champion_changes        = "logging.googleapis.com/user/${google_logging_metric.champion_changes[0].name}"
  } : {}
}

output "alert_policies" {
  description = "Alert policy names (projects/<p>/alertPolicies/<id>) by key (enable_monitoring only)."
  value = var.enable_monitoring ? {
    failed_runs         = google_monitoring_alert_policy.failed_runs[0].name
    dead_letter_backlog = google_monitoring_alert_policy.dead_letter_backlog[0].name
    function_5xx        = google_monitoring_alert_policy.function_5xx[0].name
    no_success          = google_monitoring_alert_policy.no_success[0].name
    windows_overdue     = google_monitoring_alert_policy.windows_overdue[0].name
  } : {}
}

output "dashboard" {
  description = "Cloud Monitoring dashboard (projects/<number>/dashboards/<id>; enable_monitoring only)."
  value       = var.enable_monitoring ? google_monitoring_dashboard.this[0].id : null
}

output "ui_url" {
  description = "URL of the private status page (enable_ui only): through `gcloud run services proxy`, or in a browser with enable_ui_iap."
  value       = var.enable_ui ? google_cloud_run_v2_service.ui[0].uri : null
}

output "image_repository" {
  description = "Artifact Registry path of the training image."
  value       = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}

output "template_repository_url" {
  description = "Artifact Registry KFP repository URL (upload endpoint of the alternative template store)."
  value       = "https://${var.region}-kfp.pkg.dev/${var.project_id}/${google_artifact_registry_repository.templates.repository_id}"
}

output "service_accounts" {
  description = "Email of every service account by job."
  value = merge(
    { for k, sa in google_service_account.this : k => sa.email },
    var.enable_windows ? { scheduler = google_service_account.scheduler[0].email } : {},
    local.eventarc_delivery ? { eventarc = google_service_account.eventarc[0].email } : {},
    var.enable_ui ? { ui = google_service_account.ui[0].email } : {},
  )
}

output "cloudbuild_substitutions" {
  description = "Substitutions for deploy/cloudbuild.yaml."
  value       = local.cloudbuild_substitutions
}

output "cloudbuild_substitutions_flag" {
  description = "The same as one --substitutions value ('~' separates pairs; values may hold commas)."
  value       = "^~^${join("~", [for k, v in local.cloudbuild_substitutions : "${k}=${v}"])}"
}

output "firestore_database" {
  description = "Firestore database of windows and leases (enable_windows only)."
  value       = var.enable_windows ? google_firestore_database.windows[0].name : null
}
