# retrain-trigger on Google Cloud, as a module (README.md beside this file; examples/ calls it): a
# watched data bucket whose new objects reach the event function (GCS notification -> Pub/Sub ->
# OIDC push subscription, or Eventarc), an HTTP function that Cloud Build calls after pushing a new
# training image, and the buckets, repositories and least-privilege service accounts they use.
# Each file holds one concern:
#
#   main.tf       APIs, names, buckets (created here, or existing ones referenced)
#   pubsub.tf     notifications (one per data prefix), events topic, push subscription, dead letters
#   outcomes.tf   run-outcome topic and its push subscription, notifications topic
#   functions.tf  source zips, repositories, the two functions
#   iam.tf        service accounts and every grant, with the reason for each
#   eventarc.tf   direct object-finalized delivery (event_delivery = "eventarc")
#   windows.tf    Firestore and the /flush scheduler (enable_windows = true)
#   monitoring.tf log-based metrics, alert policies, the dashboard (enable_monitoring = true)
#   ui.tf         the status page on Cloud Run, private (enable_ui = true)
#   cloudbuild.tf the build trigger and the substitutions deploy/cloudbuild.yaml needs

data "google_project" "this" {
  project_id = var.project_id
}

data "google_storage_project_service_account" "gcs" {
  project = var.project_id
}

locals {
  project_number = data.google_project.this.number
  labels         = merge({ app = "retrain-trigger", managed-by = "terraform" }, var.labels)

  # Each bucket is created here (its name defaulting to <project>-<prefix>-<role>) or, with
  # create_<role>_bucket = false, an existing one named by <role>_bucket is used as it is.
  create_bucket = {
    data      = var.create_data_bucket
    artifacts = var.create_artifacts_bucket
    templates = var.create_templates_bucket
    sources   = var.create_source_bucket
  }
  bucket_names = {
    data      = var.create_data_bucket ? coalesce(var.data_bucket, "${var.project_id}-${var.name_prefix}-data") : var.data_bucket
    artifacts = var.create_artifacts_bucket ? coalesce(var.artifacts_bucket, "${var.project_id}-${var.name_prefix}-artifacts") : var.artifacts_bucket
    templates = var.create_templates_bucket ? coalesce(var.templates_bucket, "${var.project_id}-${var.name_prefix}-templates") : var.templates_bucket
    sources   = var.create_source_bucket ? coalesce(var.source_bucket, "${var.project_id}-${var.name_prefix}-sources") : var.source_bucket
  }
  created_buckets  = { for role, name in local.bucket_names : role => name if local.create_bucket[role] }
  existing_buckets = { for role, name in local.bucket_names : role => name if !local.create_bucket[role] }

  # Every bucket's name by role, taken from the created resource or the looked-up bucket, so
  # that whatever names a bucket also waits for it.
  buckets = merge(
    { for role, bucket in google_storage_bucket.this : role => bucket.name },
    { for role, bucket in data.google_storage_bucket.existing : role => bucket.name },
  )

  access_log_bucket = coalesce(var.access_log_bucket, "${var.project_id}-${var.name_prefix}-access-logs")

  # Google-managed service agents of this project.
  pubsub_agent = "serviceAccount:service-${local.project_number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  gcs_agent    = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"

  push_delivery     = var.event_delivery == "pubsub_push"
  eventarc_delivery = var.event_delivery == "eventarc"

  pipeline_root   = "gs://${local.bucket_names.artifacts}/pipeline-root"
  manifest_prefix = "pipeline-root/manifests/" # windows.MANIFEST_FOLDER under pipeline_root
  registry_uri    = "gs://${local.bucket_names.artifacts}/models"
  template_base   = "gs://${local.bucket_names.templates}/templates"

  apis = setunion([
    "aiplatform.googleapis.com",
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "cloudscheduler.googleapis.com",
    "eventarc.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "storage.googleapis.com",
  ], local.ui_iap ? ["iap.googleapis.com"] : [])
}

resource "google_project_service" "apis" {
  for_each = var.enable_apis ? local.apis : toset([])

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

# --- buckets: uniform access, public access prevention enforced, versioned, access-logged --------
# Existing buckets (create_<role>_bucket = false) are only looked up: their settings stay their
# owners' (README.md: "Existing buckets").

data "google_storage_bucket" "existing" {
  for_each = local.existing_buckets

  name = each.value

  lifecycle {
    precondition {
      condition     = each.value != ""
      error_message = "create_${each.key}_bucket is false: set the name of the existing ${each.key} bucket."
    }
  }
}

resource "google_storage_bucket" "access_logs" {
  #checkov:skip=CKV_GCP_62:This bucket is the usage-log sink of the others; logging it into itself would loop.
  count = length(local.created_buckets) > 0 ? 1 : 0

  name                        = local.access_log_bucket
  project                     = var.project_id
  location                    = var.region
  force_destroy               = var.force_destroy_buckets
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = local.labels

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      age = 365
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

moved {
  from = google_storage_bucket.access_logs
  to   = google_storage_bucket.access_logs[0]
}

resource "google_storage_bucket" "this" {
  for_each = local.created_buckets

  name                        = each.value
  project                     = var.project_id
  location                    = var.region
  force_destroy               = var.force_destroy_buckets
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = merge(local.labels, { role = each.key })

  versioning {
    enabled = true
  }

  logging {
    log_bucket        = google_storage_bucket.access_logs[0].name
    log_object_prefix = each.key
  }

  # Versioning keeps replaced and deleted objects recoverable for a while, not forever.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

# Cloud Storage writes usage logs as this group (documented principal of the usage-log service).
moved {
  from = google_storage_bucket_iam_member.access_log_writer
  to   = google_storage_bucket_iam_member.access_log_writer[0]
}

resource "google_storage_bucket_iam_member" "access_log_writer" {
  count = length(local.created_buckets) > 0 ? 1 : 0

  bucket = google_storage_bucket.access_logs[0].name
  role   = "roles/storage.objectCreator"
  member = "group:cloud-storage-analytics@google.com"
}
