variable "project_id" {
  description = "Google Cloud project that holds everything: buckets, topics, functions, pipeline runs."
  type        = string
}

variable "region" {
  description = "Region of the functions, buckets, repositories, Vertex AI pipeline runs and the Eventarc trigger."
  type        = string
  default     = "europe-west1"
}

variable "name_prefix" {
  description = "Prefix of every resource name and service account id (lowercase letters, digits and '-', at most 14 characters)."
  type        = string
  default     = "retrain"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,13}$", var.name_prefix))
    error_message = "name_prefix must be 2-14 characters of a-z, 0-9 and '-', starting with a letter."
  }
}

variable "labels" {
  description = "Labels added to every resource that takes labels (not commit or deployed-by: deploy/cloudbuild.yaml sets those on the functions)."
  type        = map(string)
  default     = {}

  validation {
    condition     = length(setintersection(keys(var.labels), ["commit", "deployed-by"])) == 0
    error_message = "labels must not set commit or deployed-by: Cloud Build sets them on every deploy, and Terraform would set them back."
  }
}

variable "enable_apis" {
  description = "Enable the Google Cloud APIs this deployment uses (left enabled on destroy)."
  type        = bool
  default     = true
}

variable "data_bucket" {
  description = "Name of the bucket whose new objects start retraining runs. Empty: <project>-<prefix>-data."
  type        = string
  default     = ""
}

variable "data_prefix" {
  description = "Only objects whose names start with this prefix are notified (empty: the whole bucket)."
  type        = string
  default     = "data/"
}

variable "artifacts_bucket" {
  description = "Name of the bucket of pipeline roots and the model registry folder. Empty: <project>-<prefix>-artifacts."
  type        = string
  default     = ""
}

variable "templates_bucket" {
  description = "Name of the bucket of compiled pipeline templates (templates/<commit>/...). Empty: <project>-<prefix>-templates."
  type        = string
  default     = ""
}

variable "source_bucket" {
  description = "Name of the bucket of the functions' source zips. Empty: <project>-<prefix>-sources."
  type        = string
  default     = ""
}

variable "access_log_bucket" {
  description = "Name of the bucket receiving the other buckets' usage logs. Empty: <project>-<prefix>-access-logs."
  type        = string
  default     = ""
}

variable "force_destroy_buckets" {
  description = "Let terraform destroy delete non-empty buckets (for throwaway projects only)."
  type        = bool
  default     = false
}

variable "noncurrent_version_retention_days" {
  description = "Days a replaced or deleted object version is kept in the versioned buckets."
  type        = number
  default     = 30
}

variable "image_repository" {
  description = "Artifact Registry DOCKER repository (id) of the training image."
  type        = string
  default     = "retrain-images"
}

variable "template_repository" {
  description = "Artifact Registry KFP repository (id) for pipeline templates (the alternative to the templates bucket)."
  type        = string
  default     = "retrain-templates"
}

variable "function_image_repository" {
  description = "Artifact Registry DOCKER repository (id) for the containers Cloud Functions builds from the zips."
  type        = string
  default     = "retrain-functions"
}

variable "http_audience" {
  description = "Audience of the ID tokens the HTTP function accepts (RETRAIN_AUDIENCE), and the URL Cloud Build and Cloud Scheduler call. Empty: the function's deterministic Cloud Run URL, https://<http_function_name>-<project number>.<region>.run.app. Behind a load balancer: its URL, also added to the Cloud Run service's custom audiences."
  type        = string
  default     = ""

  validation {
    condition     = var.http_audience == "" || can(regex("^https://[^/]+$", var.http_audience))
    error_message = "http_audience must be empty or https://host (no path, no trailing slash)."
  }
}

variable "http_function_name" {
  description = "Name of the HTTP function (code and base-model changes, /flush)."
  type        = string
  default     = "retrain-http"
}

variable "event_function_name" {
  description = "Name of the event function (GCS object notifications)."
  type        = string
  default     = "retrain-event"
}

variable "function_http_zip" {
  description = "Path of dist/function_http-<hash>.zip, as written by `retrain-trigger package --tfvars ...`."
  type        = string
}

variable "function_gcs_zip" {
  description = "Path of dist/function_gcs-<hash>.zip, as written by `retrain-trigger package --tfvars ...`."
  type        = string
}

variable "function_memory" {
  description = "Memory of each function instance (the Vertex AI client needs more than the 256Mi default)."
  type        = string
  default     = "512Mi"
}

variable "function_timeout_seconds" {
  description = "Request timeout of each function, in seconds (longer than the submit deadline)."
  type        = number
  default     = 60
}

variable "function_max_instances" {
  description = "Maximum instances of each function: a ceiling on cost and on parallel submissions."
  type        = number
  default     = 10
}

variable "event_delivery" {
  description = "How GCS object notifications reach the event function: pubsub_push (notification -> topic -> push subscription with dead-letter topic) or eventarc (direct google.cloud.storage.object.v1.finalized trigger)."
  type        = string
  default     = "pubsub_push"

  validation {
    condition     = contains(["pubsub_push", "eventarc"], var.event_delivery)
    error_message = "event_delivery must be pubsub_push or eventarc."
  }
}

variable "push_ack_deadline_seconds" {
  description = "Seconds the event function has to answer a push before Pub/Sub redelivers."
  type        = number
  default     = 60
}

variable "max_delivery_attempts" {
  description = "Deliveries of one message before it goes to the dead-letter topic (5-100)."
  type        = number
  default     = 10
}

variable "retry_minimum_backoff" {
  description = "Shortest wait before Pub/Sub redelivers a failed push."
  type        = string
  default     = "10s"
}

variable "retry_maximum_backoff" {
  description = "Longest wait before Pub/Sub redelivers a failed push."
  type        = string
  default     = "600s"
}

variable "message_retention_duration" {
  description = "How long the subscriptions keep messages (acknowledged ones too, for seek-based replay)."
  type        = string
  default     = "604800s"
}

variable "cloudbuild_service_account_id" {
  description = "Account id of the service account Cloud Build runs deploy/cloudbuild.yaml as (the only caller of the HTTP function)."
  type        = string
  default     = ""
}

variable "extra_http_invokers" {
  description = "Further principals (e.g. 'serviceAccount:ops@p.iam.gserviceaccount.com') allowed to call the HTTP function, such as a model publisher."
  type        = list(string)
  default     = []
}

variable "pipeline_service_account_extra_roles" {
  description = "Project roles the pipeline service account needs beyond its buckets and Vertex AI User, e.g. roles/bigquery.dataViewer when a pipeline step reads BigQuery."
  type        = list(string)
  default     = []
}

variable "enable_windows" {
  description = "Batch windows (data rules with mode: window): create the Firestore database and a Cloud Scheduler job that POSTs /flush every minute."
  type        = bool
  default     = false
}

variable "firestore_database" {
  description = "Id of the Firestore database of windows and leases (used when enable_windows)."
  type        = string
  default     = "retrain-trigger"
}

variable "firestore_location" {
  description = "Location of the Firestore database. Empty: the region."
  type        = string
  default     = ""
}

variable "flush_schedule" {
  description = "Cron schedule of the /flush call (used when enable_windows)."
  type        = string
  default     = "* * * * *"
}

variable "github_owner" {
  description = "GitHub owner of the repository whose pushes run deploy/cloudbuild.yaml. Empty: no trigger is created (connect the repository first; see docs/deploy.md)."
  type        = string
  default     = ""
}

variable "github_repository" {
  description = "GitHub repository name for the Cloud Build trigger (with github_owner)."
  type        = string
  default     = ""
}

variable "github_branch_regex" {
  description = "Branches whose pushes run the build."
  type        = string
  default     = "^main$"
}

variable "config_file" {
  description = "Configuration file (path in the repository) that Cloud Build packages into both functions."
  type        = string
  default     = "retrain.yaml"
}
