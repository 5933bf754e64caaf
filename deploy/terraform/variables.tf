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
  description = "Name of the bucket whose new objects start retraining runs. Empty: <project>-<prefix>-data (created). Required with create_data_bucket = false."
  type        = string
  default     = ""
}

variable "create_data_bucket" {
  description = "Create the data bucket (private, versioned, access-logged). false: use the existing bucket named by data_bucket, whose settings stay its owner's."
  type        = bool
  default     = true
}

variable "data_prefixes" {
  description = "Object name prefixes of the data bucket that are notified, one GCS notification each (\"\" alone: the whole bucket). Prefixes must not overlap, or an object would be notified twice. Not used with event_delivery = \"eventarc\", which delivers the whole bucket."
  type        = list(string)
  default     = ["data/"]

  validation {
    condition     = length(var.data_prefixes) >= 1 && length(var.data_prefixes) <= 100 && length(distinct(var.data_prefixes)) == length(var.data_prefixes)
    error_message = "data_prefixes must hold 1 to 100 distinct prefixes (a bucket takes at most 100 notification configurations)."
  }

  validation {
    condition     = alltrue([for a in var.data_prefixes : alltrue([for b in var.data_prefixes : a == b || !startswith(a, b)])])
    error_message = "data_prefixes must not overlap: no prefix may start with another one (\"\" covers everything)."
  }
}

variable "artifacts_bucket" {
  description = "Name of the bucket of pipeline roots and the model registry folder. Empty: <project>-<prefix>-artifacts (created). Required with create_artifacts_bucket = false."
  type        = string
  default     = ""
}

variable "create_artifacts_bucket" {
  description = "Create the artifacts bucket. false: use the existing bucket named by artifacts_bucket."
  type        = bool
  default     = true
}

variable "templates_bucket" {
  description = "Name of the bucket of compiled pipeline templates (templates/<commit>/...). Empty: <project>-<prefix>-templates (created). Required with create_templates_bucket = false."
  type        = string
  default     = ""
}

variable "create_templates_bucket" {
  description = "Create the templates bucket. false: use the existing bucket named by templates_bucket."
  type        = bool
  default     = true
}

variable "source_bucket" {
  description = "Name of the bucket of the functions' source zips. Empty: <project>-<prefix>-sources (created). Required with create_source_bucket = false."
  type        = string
  default     = ""
}

variable "create_source_bucket" {
  description = "Create the source bucket. false: use the existing bucket named by source_bucket."
  type        = bool
  default     = true
}

variable "access_log_bucket" {
  description = "Name of the bucket receiving the created buckets' usage logs (created with the first of them). Empty: <project>-<prefix>-access-logs."
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

variable "cloudbuild_filename" {
  description = "Path, in the connected repository, of the build file the Cloud Build trigger runs (a copy of deploy/cloudbuild.yaml in a team's own repository)."
  type        = string
  default     = "deploy/cloudbuild.yaml"
}

variable "training_image_name" {
  description = "Name of the training image inside the images repository (Cloud Build's _IMAGE_NAME)."
  type        = string
  default     = "mnist-training"

  validation {
    condition     = can(regex("^[a-z0-9]+([._/-][a-z0-9]+)*$", var.training_image_name))
    error_message = "training_image_name must be a Docker image name: lowercase letters, digits and . _ / - separators."
  }
}

variable "training_dockerfile" {
  description = "Dockerfile of the training image, relative to the repository root (Cloud Build's _DOCKERFILE)."
  type        = string
  default     = "pipeline_specs/Dockerfile"
}

variable "pipeline_compile_module" {
  description = "Python module that compiles the pipeline (Cloud Build's _COMPILE_MODULE), run as `python -m <module> --image <image@sha256:...> --output <pipeline_template_dir>/<pipeline_template_name>`."
  type        = string
  default     = "pipeline_specs.compile"

  validation {
    condition     = can(regex("^[A-Za-z_][A-Za-z0-9_]*(\\.[A-Za-z_][A-Za-z0-9_]*)*$", var.pipeline_compile_module))
    error_message = "pipeline_compile_module must be a dotted Python module name."
  }
}

variable "pipeline_template_dir" {
  description = "Folder, relative to the repository root, where the compiled template is written: the configuration's relative template path names it (Cloud Build's _TEMPLATE_DIR)."
  type        = string
  default     = "pipeline_specs"

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$", var.pipeline_template_dir)) && !startswith(var.pipeline_template_dir, "..")
    error_message = "pipeline_template_dir must be a relative folder of letters, digits, . _ - separated by /."
  }
}

variable "pipeline_template_name" {
  description = "File name of the compiled template, as uploaded to gs://<templates>/templates/<commit>/ (Cloud Build's _TEMPLATE_NAME)."
  type        = string
  default     = "mnist_training.yaml"

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+\\.ya?ml$", var.pipeline_template_name))
    error_message = "pipeline_template_name must be a file name ending in .yaml or .yml."
  }
}

variable "outcome_topic_name" {
  description = "Name of the topic the pipelines' exit tasks publish run outcomes and champion changes to. Empty: <prefix>-run-outcomes."
  type        = string
  default     = ""
}

variable "notification_topic_name" {
  description = "Name of the topic the event function publishes run-ended and champion-changed notifications to, for teams to subscribe to. Empty: <prefix>-notifications."
  type        = string
  default     = ""
}

variable "enable_monitoring" {
  description = "Create the log-based metrics, alert policies and dashboard of monitoring.tf."
  type        = bool
  default     = true
}

variable "notification_channels" {
  description = "Cloud Monitoring notification channels (projects/<project>/notificationChannels/<id>) every alert policy notifies. Empty: alerts open incidents in the console only."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.notification_channels : can(regex("^projects/[^/]+/notificationChannels/[^/]+$", c))])
    error_message = "notification_channels must be full names: projects/<project>/notificationChannels/<id>."
  }
}

variable "alert_5xx_ratio" {
  description = "Share of a function's requests answered 5xx over 5 minutes above which the 5xx alert opens (0.05 = 5 %)."
  type        = number
  default     = 0.05

  validation {
    condition     = var.alert_5xx_ratio > 0 && var.alert_5xx_ratio < 1
    error_message = "alert_5xx_ratio must be between 0 and 1."
  }
}

variable "alert_no_success_days" {
  description = "Days without a SUCCEEDED run after which a route that was active within alert_route_activity_days alerts."
  type        = number
  default     = 7

  validation {
    condition     = var.alert_no_success_days >= 1 && floor(var.alert_no_success_days) == var.alert_no_success_days
    error_message = "alert_no_success_days must be a whole number of days, at least 1."
  }
}

variable "alert_route_activity_days" {
  description = "A route counts as active (and so watched by the no-successful-run alert) when it made any decision within this many days. Longer than alert_no_success_days."
  type        = number
  default     = 30

  validation {
    condition     = var.alert_route_activity_days >= 2 && var.alert_route_activity_days <= 730 && floor(var.alert_route_activity_days) == var.alert_route_activity_days
    error_message = "alert_route_activity_days must be a whole number of days from 2 to 730 (PromQL alert policies read at most 2 years)."
  }
}

variable "enable_ui" {
  description = "Run the status page (`retrain-trigger ui`) as a private Cloud Run service with its own read-only service account (ui.tf). Needs enable_windows (the Firestore store the page reads)."
  type        = bool
  default     = false
}

variable "ui_image" {
  description = "Container image of the status page: retrain-trigger installed (the `retrain-trigger` command on PATH) with the configuration at ui_config_path. Required with enable_ui."
  type        = string
  default     = ""
}

variable "ui_config_path" {
  description = "Path of the configuration file inside ui_image (RETRAIN_CONFIG of the status page)."
  type        = string
  default     = "retrain.yaml"
}

variable "ui_service_name" {
  description = "Name of the status page's Cloud Run service. Empty: <prefix>-ui."
  type        = string
  default     = ""
}

variable "ui_invokers" {
  description = "Principals (user:, group:, serviceAccount:, domain:) given roles/run.invoker on the status page: they reach it with an ID token, e.g. through `gcloud run services proxy`. Never public."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.ui_invokers : can(regex("^(user|group|serviceAccount|domain):.+", m))])
    error_message = "ui_invokers must be user:, group:, serviceAccount: or domain: members; the status page is never public."
  }
}

variable "enable_ui_iap" {
  description = "Put Identity-Aware Proxy directly on the status page's Cloud Run service (browser sign-in; the project must belong to an organization): ui_iap_members get roles/iap.httpsResourceAccessor and the IAP service agent roles/run.invoker."
  type        = bool
  default     = false
}

variable "ui_iap_members" {
  description = "Principals (user:, group:, domain:) allowed through IAP to the status page (with enable_ui_iap)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.ui_iap_members : can(regex("^(user|group|serviceAccount|domain):.+", m))])
    error_message = "ui_iap_members must be user:, group:, serviceAccount: or domain: members; the status page is never public."
  }
}
