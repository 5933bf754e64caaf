# The status page (enable_ui = true): `retrain-trigger ui` on Cloud Run, private, with its own
# read-only service account. It reads what the functions record (Firestore: windows, queues,
# paused routes, decision history) and the Vertex AI pipeline jobs; it writes nothing.
#
# Never public: Cloud Run's IAM check admits only the ui_invokers (roles/run.invoker), who open
# it with their own credentials through `gcloud run services proxy <service> --region <region>`
# (https://cloud.google.com/run/docs/authenticating/developers#testing). With enable_ui_iap,
# Identity-Aware Proxy sits directly on the service (no load balancer): IAP signs users in with
# Google and admits the ui_iap_members (roles/iap.httpsResourceAccessor on the service), then
# calls Cloud Run as the IAP service agent, which holds roles/run.invoker; Cloud Run's IAM check
# still runs after IAP's.
# https://cloud.google.com/run/docs/securing/identity-aware-proxy-cloud-run
#
# iap_enabled exists only in the google-beta provider before 7.0, hence provider = google-beta
# for the service (and launch_stage BETA while IAP is on, which that field requires).

locals {
  ui_service_name = coalesce(var.ui_service_name, "${var.name_prefix}-ui")
  ui_iap          = var.enable_ui && var.enable_ui_iap
  ui_member       = var.enable_ui ? "serviceAccount:${google_service_account.ui[0].email}" : ""
  iap_agent       = "serviceAccount:service-${local.project_number}@gcp-sa-iap.iam.gserviceaccount.com"
  ui_port         = 8080

  ui_env = {
    RETRAIN_CONFIG             = var.ui_config_path
    GOOGLE_CLOUD_PROJECT       = var.project_id
    RETRAIN_REGION             = var.region
    RETRAIN_BACKEND            = "vertex"
    RETRAIN_STORE              = "firestore"
    RETRAIN_FIRESTORE_DATABASE = var.firestore_database
  }
}

resource "google_service_account" "ui" {
  count = var.enable_ui ? 1 : 0

  project      = var.project_id
  account_id   = "${var.name_prefix}-ui"
  display_name = "retrain-trigger status page (read-only)"

  depends_on = [google_project_service.apis]
}

# Read the store's documents, of the retrain-trigger database only.
resource "google_project_iam_member" "ui_firestore_viewer" {
  count = var.enable_ui ? 1 : 0

  project = var.project_id
  role    = "roles/datastore.viewer"
  member  = local.ui_member

  condition {
    title       = "retrain-trigger database only"
    description = "Documents of the retrain-trigger Firestore database."
    expression  = "resource.name.startsWith(\"projects/${var.project_id}/databases/${var.firestore_database}\")"
  }
}

# Read pipeline jobs (state, parameters, errors): Vertex AI Viewer, the read-only predefined role.
resource "google_project_iam_member" "ui_vertex_viewer" {
  count = var.enable_ui ? 1 : 0

  project = var.project_id
  role    = "roles/aiplatform.viewer"
  member  = local.ui_member
}

resource "google_cloud_run_v2_service" "ui" {
  count    = var.enable_ui ? 1 : 0
  provider = google-beta

  name                 = local.ui_service_name
  project              = var.project_id
  location             = var.region
  description          = "retrain-trigger status page (read-only, private)."
  labels               = local.labels
  deletion_protection  = false
  invoker_iam_disabled = false
  iap_enabled          = local.ui_iap
  launch_stage         = local.ui_iap ? "BETA" : null
  # Browsers and IAP reach the run.app URL from outside any VPC; IAM (and IAP) decide who gets in.
  ingress = "INGRESS_TRAFFIC_ALL"

  template {
    service_account                  = google_service_account.ui[0].email
    max_instance_request_concurrency = 40
    timeout                          = "30s"

    scaling {
      min_instance_count = 0
      max_instance_count = 2
    }

    containers {
      image   = var.ui_image
      command = ["retrain-trigger"]
      # Cloud Run sets PORT to the container port below: this is `--port $PORT`.
      args = ["ui", "--host", "0.0.0.0", "--port", tostring(local.ui_port)]

      ports {
        container_port = local.ui_port
      }

      resources {
        limits = {
          cpu    = "1"
          memory = "512Mi"
        }
        cpu_idle = true
      }

      dynamic "env" {
        for_each = local.ui_env
        content {
          name  = env.key
          value = env.value
        }
      }
    }
  }

  lifecycle {
    precondition {
      condition     = var.ui_image != ""
      error_message = "enable_ui needs ui_image: an image with retrain-trigger installed."
    }
    precondition {
      condition     = var.enable_windows
      error_message = "enable_ui needs enable_windows: the status page reads the Firestore store that the functions write only then."
    }
  }

  depends_on = [
    google_project_service.apis,
    google_project_iam_member.ui_firestore_viewer,
    google_project_iam_member.ui_vertex_viewer,
  ]
}

resource "google_cloud_run_v2_service_iam_member" "ui_invoker" {
  for_each = var.enable_ui ? toset(var.ui_invokers) : toset([])

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.ui[0].name
  role     = "roles/run.invoker"
  member   = each.value
}

# --- Identity-Aware Proxy (enable_ui_iap) ------------------------------------------------------

# The IAP service agent exists once asked for; it then calls the service past Cloud Run's IAM.
resource "google_project_service_identity" "iap" {
  count    = local.ui_iap ? 1 : 0
  provider = google-beta

  project = var.project_id
  service = "iap.googleapis.com"

  depends_on = [google_project_service.apis]
}

resource "google_cloud_run_v2_service_iam_member" "ui_invoker_iap" {
  count = local.ui_iap ? 1 : 0

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.ui[0].name
  role     = "roles/run.invoker"
  member   = local.iap_agent

  depends_on = [google_project_service_identity.iap]
}

resource "google_iap_web_cloud_run_service_iam_member" "ui_accessor" {
  for_each = local.ui_iap ? toset(var.ui_iap_members) : toset([])

  project                = var.project_id
  location               = var.region
  cloud_run_service_name = google_cloud_run_v2_service.ui[0].name
  role                   = "roles/iap.httpsResourceAccessor"
  member                 = each.value
}
