# Batch windows (enable_windows = true): window and lease state lives in a Firestore database, and
# Cloud Scheduler POSTs the HTTP function's /flush every minute to close the windows that are due.

resource "google_firestore_database" "windows" {
  count = var.enable_windows ? 1 : 0

  project                           = var.project_id
  name                              = var.firestore_database
  location_id                       = coalesce(var.firestore_location, var.region)
  type                              = "FIRESTORE_NATIVE"
  delete_protection_state           = "DELETE_PROTECTION_ENABLED"
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  deletion_policy                   = "ABANDON"

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "scheduler" {
  count = var.enable_windows ? 1 : 0

  project      = var.project_id
  account_id   = "${var.name_prefix}-scheduler"
  display_name = "retrain-trigger window flush"
}

resource "google_cloud_run_v2_service_iam_member" "http_invoker_scheduler" {
  count = var.enable_windows ? 1 : 0

  project  = var.project_id
  location = var.region
  name     = local.cloud_run_services.http
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.scheduler[0].email}"
}

resource "google_cloud_scheduler_job" "flush" {
  count = var.enable_windows ? 1 : 0

  name             = "${var.name_prefix}-flush"
  project          = var.project_id
  region           = var.region
  description      = "Close the retrain-trigger batch windows that are due."
  schedule         = var.flush_schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "60s"

  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = "${google_cloudfunctions2_function.http.service_config[0].uri}/flush"
    headers     = { "Content-Type" = "application/json" }
    body        = base64encode("{}")

    oidc_token {
      service_account_email = google_service_account.scheduler[0].email
      audience              = google_cloudfunctions2_function.http.service_config[0].uri
    }
  }

  depends_on = [
    google_cloud_run_v2_service_iam_member.http_invoker_scheduler,
    google_firestore_database.windows,
  ]
}

# Decision history: Firestore deletes a recorded decision once its expire_at has passed
# (history.ttl_days). The entry itself is JSON text that no query filters on: not indexed.
resource "google_firestore_field" "decision_ttl" {
  count = var.enable_windows ? 1 : 0

  project    = var.project_id
  database   = google_firestore_database.windows[0].name
  collection = "retrain_decisions"
  field      = "expire_at"

  ttl_config {}
  index_config {}
}

resource "google_firestore_field" "decision_entry" {
  count = var.enable_windows ? 1 : 0

  project    = var.project_id
  database   = google_firestore_database.windows[0].name
  collection = "retrain_decisions"
  field      = "entry"

  index_config {}
}
