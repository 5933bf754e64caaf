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
  description = "Bucket whose new objects (under data_prefix) start retraining runs."
  value       = google_storage_bucket.this["data"].name
}

output "buckets" {
  description = "Every bucket by role: data, artifacts, templates, sources, access_logs."
  value       = merge({ for k, b in google_storage_bucket.this : k => b.name }, { access_logs = google_storage_bucket.access_logs.name })
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
