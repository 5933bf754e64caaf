# Values for deploy/cloudbuild.yaml, and (when github_owner and github_repository are set) the
# trigger that runs it on every push, as the build service account. The repository must be
# connected to Cloud Build first (console or `gcloud builds connections`); see docs/deploy.md.

locals {
  cloudbuild_substitutions = {
    _REGION               = var.region
    _AR_REPO              = google_artifact_registry_repository.images.repository_id
    _TEMPLATE_BUCKET      = local.buckets.templates
    _SOURCE_BUCKET        = local.buckets.sources
    _CONFIG               = var.config_file
    _HTTP_FUNCTION        = google_cloudfunctions2_function.http.name
    _HTTP_AUDIENCE        = local.http_audience
    _EVENT_FUNCTION       = google_cloudfunctions2_function.event.name
    _HTTP_SA              = google_service_account.this["http"].email
    _EVENT_SA             = google_service_account.this["event"].email
    _FUNCTION_BUILD_SA    = google_service_account.this["function_build"].email
    _FUNCTION_IMAGES_REPO = google_artifact_registry_repository.function_images.repository_id
    _ALLOWED_INVOKERS     = join(",", local.http_invoker_emails)
    _STORE                = local.function_env.RETRAIN_STORE
    _FIRESTORE_DATABASE   = var.firestore_database
    _EVENT_DELIVERY       = "push"
    _EVENTS_TOPIC         = google_pubsub_topic.events.name
    _PUSH_SA              = google_service_account.this["push"].email
    _MAX_INSTANCES        = tostring(var.function_max_instances)
    _OUTCOME_TOPIC        = google_pubsub_topic.outcomes.id
    _NOTIFICATION_TOPIC   = google_pubsub_topic.notifications.id
    _IMAGE_NAME           = var.training_image_name
    _DOCKERFILE           = var.training_dockerfile
    _COMPILE_MODULE       = var.pipeline_compile_module
    _TEMPLATE_DIR         = var.pipeline_template_dir
    _TEMPLATE_NAME        = var.pipeline_template_name
  }
}

resource "google_cloudbuild_trigger" "deploy" {
  count = var.github_owner != "" && var.github_repository != "" ? 1 : 0

  name            = "${var.name_prefix}-deploy"
  project         = var.project_id
  location        = "global"
  description     = "Test, build the training image, deploy the functions, start one retraining run."
  filename        = var.cloudbuild_filename
  service_account = google_service_account.this["build"].id
  substitutions   = local.cloudbuild_substitutions

  github {
    owner = var.github_owner
    name  = var.github_repository

    push {
      branch = var.github_branch_regex
    }
  }

  depends_on = [
    google_project_iam_member.build,
    google_service_account_iam_member.build_acts_as,
  ]
}
