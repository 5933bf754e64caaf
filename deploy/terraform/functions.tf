# The two functions, built from the zips of `retrain-trigger package` (object name = the zip's
# content-hashed name, so a changed source is a new object and a new deployment).
#
# Terraform creates the functions; afterwards deploy/cloudbuild.yaml deploys every commit's source
# with the same settings. Terraform therefore ignores later changes of the source object: run
# `retrain-trigger package --tfvars ...` and `terraform apply -replace=...` to deploy from here.

locals {
  function_zips = {
    http  = var.function_http_zip
    event = var.function_gcs_zip
  }

  # Identical to the env files written by deploy/cloudbuild.yaml; keep both in step.
  function_env = {
    RETRAIN_CONFIG             = "retrain.yaml"
    GOOGLE_CLOUD_PROJECT       = var.project_id
    RETRAIN_REGION             = var.region
    RETRAIN_BACKEND            = "vertex"
    RETRAIN_STORE              = var.enable_windows ? "firestore" : "sqlite"
    RETRAIN_FIRESTORE_DATABASE = var.firestore_database
    RETRAIN_STATE_DIR          = "/tmp/retrain-state"
    LOG_EXECUTION_ID           = "true"
  }

  # The event function's own: run outcomes are taken only from messages of the outcome topic
  # (outcomes.tf), and run-ended / champion-changed notifications are published to the other.
  # Both full paths, projects/<project>/topics/<name>; the same in deploy/cloudbuild.yaml.
  event_function_env = {
    RETRAIN_OUTCOME_TOPIC      = google_pubsub_topic.outcomes.id
    RETRAIN_NOTIFICATION_TOPIC = google_pubsub_topic.notifications.id
  }

  # The audience of the HTTP function's ID tokens, pinned rather than taken from the request's
  # Host. The function's own URI cannot be used here (it would refer to itself), so the default
  # is the service's deterministic URL, known before it exists:
  # https://cloud.google.com/run/docs/triggering/https-request#deterministic
  http_audience = coalesce(var.http_audience, "https://${var.http_function_name}-${local.project_number}.${var.region}.run.app")

  # Callers the HTTP function itself accepts (ID token email), on top of Cloud Run's IAM check.
  http_invoker_emails = concat(
    [google_service_account.this["build"].email],
    var.enable_windows ? [google_service_account.scheduler[0].email] : [],
    [for member in var.extra_http_invokers : trimprefix(member, "serviceAccount:") if startswith(member, "serviceAccount:")],
  )
}

resource "google_storage_bucket_object" "function_source" {
  for_each = local.function_zips

  bucket       = local.buckets.sources
  name         = basename(each.value)
  source       = each.value
  content_type = "application/zip"
}

# --- Artifact Registry ---------------------------------------------------------------------------

resource "google_artifact_registry_repository" "images" {
  #checkov:skip=CKV_GCP_84:Training images hold code, not data; Google-managed encryption at rest.
  project       = var.project_id
  location      = var.region
  repository_id = var.image_repository
  format        = "DOCKER"
  description   = "Training images, tagged with the commit; pipelines use them by digest."
  labels        = local.labels

  depends_on = [google_project_service.apis]
}

resource "google_artifact_registry_repository" "templates" {
  #checkov:skip=CKV_GCP_84:Compiled pipeline templates hold no data; Google-managed encryption at rest.
  project       = var.project_id
  location      = var.region
  repository_id = var.template_repository
  format        = "KFP"
  description   = "Compiled pipeline templates (alternative to the templates bucket)."
  labels        = local.labels

  depends_on = [google_project_service.apis]
}

resource "google_artifact_registry_repository" "function_images" {
  #checkov:skip=CKV_GCP_84:Containers built from the function sources hold no data; Google-managed encryption at rest.
  project       = var.project_id
  location      = var.region
  repository_id = var.function_image_repository
  format        = "DOCKER"
  description   = "Containers that Cloud Functions builds from the function source zips."
  labels        = local.labels

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 10
    }
  }

  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      older_than = "2592000s"
    }
  }

  depends_on = [google_project_service.apis]
}

# --- functions -----------------------------------------------------------------------------------

resource "google_cloudfunctions2_function" "http" {
  #checkov:skip=CKV_GCP_124:Cloud Build's default worker pool calls from outside any VPC; Cloud Run IAM (run.invoker for the build account only) and the function's own ID-token check guard it.
  name        = var.http_function_name
  project     = var.project_id
  location    = var.region
  description = "retrain-trigger: code and base-model changes (Cloud Build), /flush."
  labels      = local.labels

  build_config {
    runtime           = "python312"
    entry_point       = "retrain_http"
    service_account   = google_service_account.this["function_build"].id
    docker_repository = google_artifact_registry_repository.function_images.id

    source {
      storage_source {
        bucket = google_storage_bucket_object.function_source["http"].bucket
        object = google_storage_bucket_object.function_source["http"].name
      }
    }
  }

  service_config {
    available_memory               = var.function_memory
    timeout_seconds                = var.function_timeout_seconds
    min_instance_count             = 0
    max_instance_count             = var.function_max_instances
    service_account_email          = google_service_account.this["http"].email
    all_traffic_on_latest_revision = true
    # Cloud Build's default pool calls from outside the project's network, so ingress stays open;
    # only principals with roles/run.invoker on this service get through (see iam.tf), and the
    # function checks the ID token's audience and email again.
    ingress_settings = "ALLOW_ALL"
    environment_variables = merge(local.function_env, {
      RETRAIN_AUTH             = "iam"
      RETRAIN_AUDIENCE         = local.http_audience
      RETRAIN_ALLOWED_INVOKERS = join(",", local.http_invoker_emails)
    })
  }

  lifecycle {
    ignore_changes = [build_config[0].source]
  }

  depends_on = [
    google_project_service.apis,
    google_project_iam_member.function_build,
    google_artifact_registry_repository_iam_member.function_build_writer,
    google_storage_bucket_iam_member.function_build_source_reader,
  ]
}

resource "google_cloudfunctions2_function" "event" {
  name        = var.event_function_name
  project     = var.project_id
  location    = var.region
  description = "retrain-trigger: new data in GCS (push subscription or Eventarc)."
  labels      = local.labels

  build_config {
    runtime           = "python312"
    entry_point       = "retrain_event"
    service_account   = google_service_account.this["function_build"].id
    docker_repository = google_artifact_registry_repository.function_images.id

    source {
      storage_source {
        bucket = google_storage_bucket_object.function_source["event"].bucket
        object = google_storage_bucket_object.function_source["event"].name
      }
    }
  }

  # No event_trigger: delivery is configured outside the function (pubsub.tf or eventarc.tf), so
  # the retry policy, the dead-letter topic and replay by seek belong to a subscription we own.
  service_config {
    available_memory               = var.function_memory
    timeout_seconds                = var.function_timeout_seconds
    min_instance_count             = 0
    max_instance_count             = var.function_max_instances
    service_account_email          = google_service_account.this["event"].email
    all_traffic_on_latest_revision = true
    # Pub/Sub push and Eventarc requests from this project count as internal.
    ingress_settings      = "ALLOW_INTERNAL_ONLY"
    environment_variables = merge(local.function_env, local.event_function_env)
  }

  lifecycle {
    ignore_changes = [build_config[0].source]
  }

  depends_on = [
    google_project_service.apis,
    google_project_iam_member.function_build,
    google_artifact_registry_repository_iam_member.function_build_writer,
    google_storage_bucket_iam_member.function_build_source_reader,
  ]
}
