# retrain-trigger on Google Cloud: a watched data bucket whose new objects reach the event function
# (GCS notification -> Pub/Sub -> OIDC push subscription, or Eventarc), an HTTP function that Cloud
# Build calls after pushing a new training image, and the buckets, repositories and least-privilege
# service accounts they use. Each file holds one concern:
#
#   main.tf      APIs, names, buckets
#   pubsub.tf    notification, events topic, push subscription, dead-letter topic
#   functions.tf source zips, repositories, the two functions
#   iam.tf       service accounts and every grant, with the reason for each
#   eventarc.tf  direct object-finalized delivery (event_delivery = "eventarc")
#   windows.tf   Firestore and the /flush scheduler (enable_windows = true)
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

  bucket_names = {
    data      = coalesce(var.data_bucket, "${var.project_id}-${var.name_prefix}-data")
    artifacts = coalesce(var.artifacts_bucket, "${var.project_id}-${var.name_prefix}-artifacts")
    templates = coalesce(var.templates_bucket, "${var.project_id}-${var.name_prefix}-templates")
    sources   = coalesce(var.source_bucket, "${var.project_id}-${var.name_prefix}-sources")
  }
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

  apis = toset([
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
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "storage.googleapis.com",
  ])
}

resource "google_project_service" "apis" {
  for_each = var.enable_apis ? local.apis : toset([])

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

# --- buckets: uniform access, public access prevention enforced, versioned, access-logged --------

resource "google_storage_bucket" "access_logs" {
  #checkov:skip=CKV_GCP_62:This bucket is the usage-log sink of the others; logging it into itself would loop.
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

resource "google_storage_bucket" "this" {
  for_each = local.bucket_names

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
    log_bucket        = google_storage_bucket.access_logs.name
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
resource "google_storage_bucket_iam_member" "access_log_writer" {
  bucket = google_storage_bucket.access_logs.name
  role   = "roles/storage.objectCreator"
  member = "group:cloud-storage-analytics@google.com"
}
