# Service accounts and grants. One account per job, each with only what that job needs, and every
# grant as narrow as the service allows: on the bucket, repository, topic, subscription, service
# account or Cloud Run service concerned, and at the project only where no narrower scope exists.
#
#   http, event      the two functions: submit pipeline jobs as the pipeline account, read templates
#   pipeline         runs the pipeline: reads the data bucket, writes pipeline roots and models
#   push             identity of the push subscription's OIDC token: may invoke the event function
#   build            Cloud Build: pushes images and templates, deploys the functions, calls http
#   function_build   builds the functions' containers from the source zips
#   scheduler        (enable_windows) calls http's /flush
#   eventarc         (event_delivery = "eventarc") delivers object-finalized events

locals {
  service_accounts = {
    http           = { id = "${var.name_prefix}-http", name = "retrain-trigger HTTP function" }
    event          = { id = "${var.name_prefix}-event", name = "retrain-trigger event function" }
    pipeline       = { id = "${var.name_prefix}-pipeline", name = "retrain-trigger pipeline runs" }
    push           = { id = "${var.name_prefix}-push", name = "retrain-trigger push subscription" }
    build          = { id = coalesce(var.cloudbuild_service_account_id, "${var.name_prefix}-build"), name = "retrain-trigger Cloud Build" }
    function_build = { id = "${var.name_prefix}-fn-build", name = "retrain-trigger function builds" }
  }

  # The accounts that submit pipeline jobs: the two functions.
  submitters = {
    http  = "serviceAccount:${google_service_account.this["http"].email}"
    event = "serviceAccount:${google_service_account.this["event"].email}"
  }

  pipeline_member       = "serviceAccount:${google_service_account.this["pipeline"].email}"
  build_member          = "serviceAccount:${google_service_account.this["build"].email}"
  function_build_member = "serviceAccount:${google_service_account.this["function_build"].email}"
  push_member           = "serviceAccount:${google_service_account.this["push"].email}"

  cloud_run_services = {
    http  = google_cloudfunctions2_function.http.name
    event = google_cloudfunctions2_function.event.name
  }
}

resource "google_service_account" "this" {
  for_each = local.service_accounts

  project      = var.project_id
  account_id   = each.value.id
  display_name = each.value.name

  depends_on = [google_project_service.apis]
}

# --- the functions (pipeline submitters) -------------------------------------------------------

# Create and read PipelineJobs. Vertex AI has no predefined role narrower than roles/aiplatform.user
# that includes aiplatform.pipelineJobs.create, and pipeline jobs cannot be granted per resource.
resource "google_project_iam_member" "submitter_vertex" {
  for_each = local.submitters

  project = var.project_id
  role    = "roles/aiplatform.user"
  member  = each.value
}

# Run jobs as the pipeline account: actAs on that one account only, never project-wide.
resource "google_service_account_iam_member" "submitter_acts_as_pipeline" {
  for_each = local.submitters

  service_account_id = google_service_account.this["pipeline"].name
  role               = "roles/iam.serviceAccountUser"
  member             = each.value
}

# Read compiled templates: the templates bucket and the KFP repository, nothing else.
resource "google_storage_bucket_iam_member" "submitter_templates_reader" {
  for_each = local.submitters

  bucket = local.buckets.templates
  role   = "roles/storage.objectViewer"
  member = each.value
}

resource "google_artifact_registry_repository_iam_member" "submitter_kfp_reader" {
  for_each = local.submitters

  project    = var.project_id
  location   = google_artifact_registry_repository.templates.location
  repository = google_artifact_registry_repository.templates.name
  role       = "roles/artifactregistry.reader"
  member     = each.value
}

# Windows and leases: read and write documents of the one Firestore database.
resource "google_project_iam_member" "submitter_firestore" {
  for_each = var.enable_windows ? local.submitters : {}

  project = var.project_id
  role    = "roles/datastore.user"
  member  = each.value

  condition {
    title       = "retrain-trigger database only"
    description = "Documents of the retrain-trigger Firestore database."
    expression  = "resource.name.startsWith(\"projects/${var.project_id}/databases/${var.firestore_database}\")"
  }
}

# POST /flush (the HTTP function) writes each closing window's manifest under the pipeline root
# (windows.write_manifest -> gcs.write_stream, one resumable upload), with no generation
# precondition: a flush retried
# after a crash rewrites the same manifest, an overwrite, which needs storage.objects.delete as
# well as create (objectCreator alone answers 403:
# https://cloud.google.com/storage/docs/access-control/iam-permissions). objectUser, on the
# artifacts bucket only and, by condition, on the manifests folder only.
# https://cloud.google.com/storage/docs/access-control/iam#conditions
resource "google_storage_bucket_iam_member" "http_manifest_writer" {
  count = var.enable_windows ? 1 : 0

  bucket = local.buckets.artifacts
  role   = "roles/storage.objectUser"
  member = local.submitters.http

  condition {
    title       = "window manifests only"
    description = "Objects under the pipeline root's manifests/ folder."
    expression  = "resource.name.startsWith(\"projects/_/buckets/${local.bucket_names.artifacts}/objects/${local.manifest_prefix}\")"
  }
}

# --- the pipeline --------------------------------------------------------------------------------

# Google lists Vertex AI User for the account a pipeline runs as (pipeline job, metadata store,
# model uploads): https://cloud.google.com/vertex-ai/docs/pipelines/configure-project#service-account
resource "google_project_iam_member" "pipeline_vertex" {
  project = var.project_id
  role    = "roles/aiplatform.user"
  member  = local.pipeline_member
}

resource "google_storage_bucket_iam_member" "pipeline_data_reader" {
  bucket = local.buckets.data
  role   = "roles/storage.objectViewer"
  member = local.pipeline_member
}

# Pipeline roots (pipeline-root/) and the model registry folder (models/) of the artifacts bucket:
# create, read, overwrite and delete objects, without any right on the bucket's IAM policy.
resource "google_storage_bucket_iam_member" "pipeline_artifacts_user" {
  bucket = local.buckets.artifacts
  role   = "roles/storage.objectUser"
  member = local.pipeline_member
}

resource "google_project_iam_member" "pipeline_extra" {
  for_each = toset(var.pipeline_service_account_extra_roles)

  project = var.project_id
  role    = each.value
  member  = local.pipeline_member
}

# --- delivery to the event function --------------------------------------------------------------

# Both push subscriptions (data events with pubsub_push delivery, and run outcomes always) sign
# their requests as the push account.
resource "google_cloud_run_v2_service_iam_member" "event_invoker_push" {
  project  = var.project_id
  location = var.region
  name     = local.cloud_run_services.event
  role     = "roles/run.invoker"
  member   = local.push_member
}

moved {
  from = google_cloud_run_v2_service_iam_member.event_invoker_push[0]
  to   = google_cloud_run_v2_service_iam_member.event_invoker_push
}

# Pub/Sub's service agent mints the push subscriptions' OIDC tokens as the push account.
resource "google_service_account_iam_member" "pubsub_token_creator" {
  service_account_id = google_service_account.this["push"].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent
}

# --- Cloud Build -------------------------------------------------------------------------------

# Only Cloud Build may invoke the HTTP function (plus the scheduler, and extra_http_invokers).
resource "google_cloud_run_v2_service_iam_member" "http_invoker_build" {
  project  = var.project_id
  location = var.region
  name     = local.cloud_run_services.http
  role     = "roles/run.invoker"
  member   = local.build_member
}

resource "google_cloud_run_v2_service_iam_member" "http_invoker_extra" {
  for_each = toset(var.extra_http_invokers)

  project  = var.project_id
  location = var.region
  name     = local.cloud_run_services.http
  role     = "roles/run.invoker"
  member   = each.value
}

# Deploying functions: no narrower predefined role exists, and functions cannot be granted per
# resource before they exist. Logs of a build that runs as a user-managed account need logWriter.
resource "google_project_iam_member" "build" {
  for_each = toset(["roles/cloudfunctions.developer", "roles/logging.logWriter"])

  project = var.project_id
  role    = each.value
  member  = local.build_member
}

# `gcloud functions deploy --no-allow-unauthenticated` reads and rewrites the invoker policy of
# each function's Cloud Run service: exactly these two permissions, on those two services only.
resource "google_project_iam_custom_role" "function_invoker_policy" {
  project     = var.project_id
  role_id     = "${replace(var.name_prefix, "-", "_")}_function_invoker_policy"
  title       = "retrain-trigger: keep functions private on deploy"
  description = "Read and set the IAM policy of a Cloud Run service (granted per service)."
  permissions = ["run.services.getIamPolicy", "run.services.setIamPolicy"]
}

resource "google_cloud_run_v2_service_iam_member" "build_policy" {
  for_each = local.cloud_run_services

  project  = var.project_id
  location = var.region
  name     = each.value
  role     = google_project_iam_custom_role.function_invoker_policy.name
  member   = local.build_member
}

# Deploy each function as its runtime account, and its build as the function-build account.
resource "google_service_account_iam_member" "build_acts_as" {
  for_each = toset(["http", "event", "function_build"])

  service_account_id = google_service_account.this[each.value].name
  role               = "roles/iam.serviceAccountUser"
  member             = local.build_member
}

resource "google_artifact_registry_repository_iam_member" "build_writer" {
  for_each = {
    images    = google_artifact_registry_repository.images.name
    templates = google_artifact_registry_repository.templates.name
  }

  project    = var.project_id
  location   = var.region
  repository = each.value
  role       = "roles/artifactregistry.writer"
  member     = local.build_member
}

# Templates and source zips: add new objects and read them, never overwrite or delete.
resource "google_storage_bucket_iam_member" "build_objects" {
  for_each = {
    templates-create = { bucket = "templates", role = "roles/storage.objectCreator" }
    templates-read   = { bucket = "templates", role = "roles/storage.objectViewer" }
    sources-create   = { bucket = "sources", role = "roles/storage.objectCreator" }
    sources-read     = { bucket = "sources", role = "roles/storage.objectViewer" }
  }

  bucket = local.buckets[each.value.bucket]
  role   = each.value.role
  member = local.build_member
}

# --- function builds -----------------------------------------------------------------------------

resource "google_project_iam_member" "function_build" {
  for_each = {
    logs = { role = "roles/logging.logWriter", condition = null }
    # Cloud Functions stages each source in its own gcf-v2-* buckets, named after the project
    # number and region, before the build reads it.
    staged-sources = {
      role      = "roles/storage.objectViewer"
      condition = "resource.name.startsWith(\"projects/_/buckets/gcf-v2-sources-${local.project_number}-\") || resource.name.startsWith(\"projects/_/buckets/gcf-v2-uploads-${local.project_number}-\")"
    }
  }

  project = var.project_id
  role    = each.value.role
  member  = local.function_build_member

  dynamic "condition" {
    for_each = each.value.condition == null ? [] : [each.value.condition]
    content {
      title      = "Cloud Functions source buckets"
      expression = condition.value
    }
  }
}

resource "google_artifact_registry_repository_iam_member" "function_build_writer" {
  project    = var.project_id
  location   = var.region
  repository = google_artifact_registry_repository.function_images.name
  role       = "roles/artifactregistry.writer"
  member     = local.function_build_member
}

resource "google_storage_bucket_iam_member" "function_build_source_reader" {
  bucket = local.buckets.sources
  role   = "roles/storage.objectViewer"
  member = local.function_build_member
}
