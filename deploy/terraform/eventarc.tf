# Direct delivery (event_delivery = "eventarc"): Eventarc sends each
# google.cloud.storage.object.v1.finalized CloudEvent of the data bucket to the event function,
# instead of the notification and push subscription of pubsub.tf. Eventarc filters by bucket only;
# the configuration's include/exclude rules select objects. Retries are Eventarc's (exponential
# backoff for up to 24 hours); there is no dead-letter topic of ours on this path.

resource "google_service_account" "eventarc" {
  count = local.eventarc_delivery ? 1 : 0

  project      = var.project_id
  account_id   = "${var.name_prefix}-eventarc"
  display_name = "retrain-trigger Eventarc delivery"
}

# Receive events as a trigger identity: Eventarc grants this role per project only.
resource "google_project_iam_member" "eventarc_receiver" {
  count = local.eventarc_delivery ? 1 : 0

  project = var.project_id
  role    = "roles/eventarc.eventReceiver"
  member  = "serviceAccount:${google_service_account.eventarc[0].email}"
}

resource "google_cloud_run_v2_service_iam_member" "event_invoker_eventarc" {
  count = local.eventarc_delivery ? 1 : 0

  project  = var.project_id
  location = var.region
  name     = local.cloud_run_services.event
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.eventarc[0].email}"
}

# Cloud Storage triggers need the Cloud Storage service agent to publish to Eventarc's own topics,
# which Eventarc creates and names itself: the grant can only be made at the project.
resource "google_project_iam_member" "gcs_agent_publisher" {
  count = local.eventarc_delivery ? 1 : 0

  project = var.project_id
  role    = "roles/pubsub.publisher"
  member  = local.gcs_agent
}

resource "google_eventarc_trigger" "gcs_finalized" {
  count = local.eventarc_delivery ? 1 : 0

  name            = "${var.name_prefix}-gcs-finalized"
  project         = var.project_id
  location        = var.region
  service_account = google_service_account.eventarc[0].email
  labels          = local.labels

  matching_criteria {
    attribute = "type"
    value     = "google.cloud.storage.object.v1.finalized"
  }

  matching_criteria {
    attribute = "bucket"
    value     = local.buckets.data
  }

  destination {
    cloud_run_service {
      service = local.cloud_run_services.event
      region  = var.region
    }
  }

  event_data_content_type = "application/json"

  depends_on = [
    google_project_iam_member.eventarc_receiver,
    google_project_iam_member.gcs_agent_publisher,
    google_cloud_run_v2_service_iam_member.event_invoker_eventarc,
  ]
}
