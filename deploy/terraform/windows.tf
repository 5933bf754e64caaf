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

  # Cloud Scheduler puts its OIDC token in Authorization, and nowhere else: Cloud Run checks it
  # and removes its signature, so the function accepts it on /flush only (see auth.py).
  http_target {
    http_method = "POST"
    uri         = "${local.http_audience}/flush"
    headers     = { "Content-Type" = "application/json" }
    body        = base64encode("{}")

    oidc_token {
      service_account_email = google_service_account.scheduler[0].email
      audience              = local.http_audience
    }
  }

  depends_on = [
    google_cloud_run_v2_service_iam_member.http_invoker_scheduler,
    google_firestore_database.windows,
  ]
}

# Time to live: Firestore deletes a document once its expire_at (a Timestamp) has passed, on every
# collection that grows with the events (store/firestore.py): windows, their items, and recorded
# decisions (history.ttl_days). The other collections hold one document per route.
# https://cloud.google.com/firestore/docs/ttl
locals {
  firestore_ttl_collections = toset(["retrain_windows", "retrain_window_items", "retrain_decisions"])
}

resource "google_firestore_field" "expire_at" {
  for_each = var.enable_windows ? local.firestore_ttl_collections : toset([])

  project    = var.project_id
  database   = google_firestore_database.windows[0].name
  collection = each.value
  field      = "expire_at"

  ttl_config {}

  # An index_config block replaces the field's inherited indexes, and an empty one drops them all
  # (google_firestore_field docs). purge_expired (store/firestore.py) filters expire_at <= now,
  # a range that needs the ascending collection-scope index: keep exactly that one.
  index_config {
    indexes {
      order       = "ASCENDING"
      query_scope = "COLLECTION"
    }
  }
}

moved {
  from = google_firestore_field.decision_ttl[0]
  to   = google_firestore_field.expire_at["retrain_decisions"]
}

# The decision entry is JSON text that no query filters on: not indexed.
resource "google_firestore_field" "decision_entry" {
  count = var.enable_windows ? 1 : 0

  project    = var.project_id
  database   = google_firestore_database.windows[0].name
  collection = "retrain_decisions"
  field      = "entry"

  index_config {}
}

# Composite indexes (store/firestore.py COMPOSITE_INDEXES; tests/deploy/test_firestore_indexes.py
# keeps the two equal). A window's items stream in the order they were added and its newest item
# gives its last event time; decision ids are random (no write hotspot), so listing decisions
# newest first orders on their time field, after equality filters on object, route or outcome.
locals {
  firestore_composite_indexes = {
    items_by_window_oldest_first = {
      collection = "retrain_window_items"
      fields     = [["window_id", "ASCENDING"], ["added_at", "ASCENDING"]]
    }
    items_by_window_newest_first = {
      collection = "retrain_window_items"
      fields     = [["window_id", "ASCENDING"], ["added_at", "DESCENDING"]]
    }
    decisions_by_object = {
      collection = "retrain_decisions"
      fields     = [["object_key", "ASCENDING"], ["time", "DESCENDING"]]
    }
    decisions_by_route = {
      collection = "retrain_decisions"
      fields     = [["route", "ASCENDING"], ["time", "DESCENDING"]]
    }
    decisions_by_outcome = {
      collection = "retrain_decisions"
      fields     = [["outcome", "ASCENDING"], ["time", "DESCENDING"]]
    }
    decisions_by_route_and_outcome = {
      collection = "retrain_decisions"
      fields     = [["route", "ASCENDING"], ["outcome", "ASCENDING"], ["time", "DESCENDING"]]
    }
  }
}

resource "google_firestore_index" "composite" {
  for_each = { for name, index in local.firestore_composite_indexes : name => index if var.enable_windows }

  project     = var.project_id
  database    = google_firestore_database.windows[0].name
  collection  = each.value.collection
  query_scope = "COLLECTION"

  dynamic "fields" {
    for_each = each.value.fields
    content {
      field_path = fields.value[0]
      order      = fields.value[1]
    }
  }
}
