# Run outcomes come back, and teams hear of them.
#
#   pipeline exit task ─ publish (pipeline account) ─▶ topic <prefix>-run-outcomes
#     ─ push subscription (OIDC as <prefix>-push) ─▶ event function, at the URL path
#       /projects/<project>/topics/<outcome topic>
#     └─ after max_delivery_attempts failed deliveries ─▶ <prefix>-run-outcomes-dead-letter (7 days)
#   event function ─ publish (event account) ─▶ topic <prefix>-notifications ─▶ the teams' own
#     subscriptions (chat, e-mail)
#
# The push URL's path matters: functions-framework turns a raw Pub/Sub push into a
# google.cloud.pubsub.topic.v1.messagePublished CloudEvent whose source names the topic only when
# the path is /projects/<project>/topics/<topic>, and the event function takes as run outcomes
# only the messages whose source is RETRAIN_OUTCOME_TOPIC (functions.tf). The OIDC token's
# audience stays the service URL: Pub/Sub would otherwise use the whole endpoint, path included
# (https://cloud.google.com/pubsub/docs/reference/rest/v1/projects.subscriptions#oidctoken), and
# Cloud Run accepts the service's URL or a configured custom audience
# (https://cloud.google.com/run/docs/configuring/custom-audiences).

locals {
  outcome_topic_name      = coalesce(var.outcome_topic_name, "${var.name_prefix}-run-outcomes")
  notification_topic_name = coalesce(var.notification_topic_name, "${var.name_prefix}-notifications")
  outcome_push_endpoint   = "${google_cloudfunctions2_function.event.service_config[0].uri}/projects/${var.project_id}/topics/${local.outcome_topic_name}"
}

resource "google_pubsub_topic" "outcomes" {
  #checkov:skip=CKV_GCP_83:Run outcomes carry job names, states, durations and error messages, no data; Google-managed encryption at rest.
  name                       = local.outcome_topic_name
  project                    = var.project_id
  labels                     = local.labels
  message_retention_duration = var.message_retention_duration

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "outcomes_dead_letter" {
  #checkov:skip=CKV_GCP_83:Dead-lettered run outcomes are copies of the outcome topic's messages, no data; Google-managed encryption at rest.
  name                       = "${local.outcome_topic_name}-dead-letter"
  project                    = var.project_id
  labels                     = local.labels
  message_retention_duration = var.message_retention_duration

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "notifications" {
  #checkov:skip=CKV_GCP_83:Notifications name routes, jobs, states and model versions, no data; Google-managed encryption at rest.
  name                       = local.notification_topic_name
  project                    = var.project_id
  labels                     = local.labels
  message_retention_duration = var.message_retention_duration

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_subscription" "outcomes_push" {
  name    = "${local.outcome_topic_name}-push"
  project = var.project_id
  topic   = google_pubsub_topic.outcomes.id
  labels  = local.labels

  ack_deadline_seconds       = var.push_ack_deadline_seconds
  message_retention_duration = var.message_retention_duration
  retain_acked_messages      = true

  expiration_policy {
    ttl = ""
  }

  push_config {
    push_endpoint = local.outcome_push_endpoint

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
    dead_letter_topic     = google_pubsub_topic.outcomes_dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  depends_on = [
    google_cloud_run_v2_service_iam_member.event_invoker_push,
    google_service_account_iam_member.pubsub_token_creator,
  ]
}

resource "google_pubsub_subscription" "outcomes_dead_letter" {
  name    = "${local.outcome_topic_name}-dead-letter"
  project = var.project_id
  topic   = google_pubsub_topic.outcomes_dead_letter.id
  labels  = local.labels

  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  retain_acked_messages      = true

  expiration_policy {
    ttl = ""
  }
}

# The pipeline's exit task reports each run's end (run-outcome and champion messages).
resource "google_pubsub_topic_iam_member" "pipeline_outcome_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.outcomes.name
  role    = "roles/pubsub.publisher"
  member  = local.pipeline_member
}

# The event function publishes run-ended and champion-changed notifications.
resource "google_pubsub_topic_iam_member" "event_notification_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.notifications.name
  role    = "roles/pubsub.publisher"
  member  = local.submitters.event
}

# Pub/Sub's service agent forwards undeliverable outcomes, as for the data subscription
# (pubsub.tf): it publishes to the dead-letter topic and acknowledges on the source subscription.
# https://cloud.google.com/pubsub/docs/handling-failures#grant_forwarding_permissions
resource "google_pubsub_topic_iam_member" "outcomes_dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.outcomes_dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "outcomes_dead_letter_source_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.outcomes_push.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

# Run records and champion changes in Firestore (store/firestore.py, "run outcomes"): they grow
# with the runs, so each collection has a TTL policy on expire_at (a Timestamp: the end of a
# run's history, history.ttl_days after its submission or end), keeping the ascending index
# purge_expired's range needs. https://cloud.google.com/firestore/docs/ttl
locals {
  run_outcome_ttl_collections = toset(["retrain_runs", "retrain_run_ends", "retrain_champions"])
}

resource "google_firestore_field" "run_outcomes_expire_at" {
  for_each = var.enable_windows ? local.run_outcome_ttl_collections : toset([])

  project    = var.project_id
  database   = google_firestore_database.windows[0].name
  collection = each.value
  field      = "expire_at"

  ttl_config {}

  index_config {
    indexes {
      order       = "ASCENDING"
      query_scope = "COLLECTION"
    }
  }
}

# A run's and a champion change's record is JSON text that no query filters on: not indexed.
resource "google_firestore_field" "run_outcomes_record" {
  for_each = var.enable_windows ? toset(["retrain_runs", "retrain_champions"]) : toset([])

  project    = var.project_id
  database   = google_firestore_database.windows[0].name
  collection = each.value
  field      = "record"

  index_config {}
}
