# GCS notification -> events topic -> push subscription (OIDC) -> event function.
# A message the function keeps failing on goes, after max_delivery_attempts, to the dead-letter
# topic, whose pull subscription keeps it for 7 days for inspection and republishing. The push
# subscription keeps acknowledged messages too, so `retrain-trigger replay --subscription ... --since`
# can seek back in time.

resource "google_pubsub_topic" "events" {
  #checkov:skip=CKV_GCP_83:Messages carry object metadata only (names, sizes, generations), no data; Google-managed encryption at rest.
  name                       = "${var.name_prefix}-gcs-events"
  project                    = var.project_id
  labels                     = local.labels
  message_retention_duration = var.message_retention_duration

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "dead_letter" {
  #checkov:skip=CKV_GCP_83:Dead-lettered messages are copies of the events topic's metadata-only messages; Google-managed encryption at rest.
  name                       = "${var.name_prefix}-gcs-events-dead-letter"
  project                    = var.project_id
  labels                     = local.labels
  message_retention_duration = var.message_retention_duration

  depends_on = [google_project_service.apis]
}

# The project's Cloud Storage service agent publishes the notifications.
resource "google_pubsub_topic_iam_member" "gcs_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.events.name
  role    = "roles/pubsub.publisher"
  member  = local.gcs_agent
}

# One notification configuration per data prefix (a bucket holds up to 100 of them:
# https://cloud.google.com/storage/docs/pubsub-notifications). The prefixes never overlap
# (variables.tf), so no object is notified twice; "" is the whole bucket. A bucket of another
# team in this project can feed the same topic with a google_storage_notification of its own on
# the module's events_topic output: the project's Cloud Storage service agent publishes there.
resource "google_storage_notification" "data" {
  for_each = local.push_delivery ? toset(var.data_prefixes) : toset([])

  bucket             = local.buckets.data
  payload_format     = "JSON_API_V1"
  topic              = google_pubsub_topic.events.id
  event_types        = ["OBJECT_FINALIZE"]
  object_name_prefix = each.value != "" ? each.value : null

  depends_on = [google_pubsub_topic_iam_member.gcs_publisher]
}

# Before data_prefixes, the one notification was data[0], for data_prefix "data/" by default.
moved {
  from = google_storage_notification.data[0]
  to   = google_storage_notification.data["data/"]
}

resource "google_pubsub_subscription" "push" {
  count = local.push_delivery ? 1 : 0

  name    = "${var.name_prefix}-gcs-events-push"
  project = var.project_id
  topic   = google_pubsub_topic.events.id
  labels  = local.labels

  ack_deadline_seconds       = var.push_ack_deadline_seconds
  message_retention_duration = var.message_retention_duration
  retain_acked_messages      = true

  expiration_policy {
    ttl = ""
  }

  push_config {
    push_endpoint = google_cloudfunctions2_function.event.service_config[0].uri

    oidc_token {
      service_account_email = google_service_account.this["push"].email
      audience              = google_cloudfunctions2_function.event.service_config[0].uri
    }
  }

  retry_policy {
    minimum_backoff = var.retry_minimum_backoff
    maximum_backoff = var.retry_maximum_backoff
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  depends_on = [
    google_cloud_run_v2_service_iam_member.event_invoker_push,
    google_service_account_iam_member.pubsub_token_creator,
  ]
}

resource "google_pubsub_subscription" "dead_letter" {
  name    = "${var.name_prefix}-gcs-events-dead-letter"
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.id
  labels  = local.labels

  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  retain_acked_messages      = true

  expiration_policy {
    ttl = ""
  }
}

# Pub/Sub's service agent forwards undeliverable messages: it publishes to the dead-letter topic
# and acknowledges them on the source subscription.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_source_subscriber" {
  count = local.push_delivery ? 1 : 0

  project      = var.project_id
  subscription = google_pubsub_subscription.push[0].name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}
