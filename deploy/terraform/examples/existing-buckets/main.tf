# A team that already has its data and artifacts buckets, watches two prefixes of the data
# bucket, compiles its own pipeline in Cloud Build, pages its on-call channel, and runs batch
# windows. The module creates only the templates and sources buckets (and their access-log
# bucket); the existing ones are looked up and granted to, never modified.

terraform {
  required_version = ">= 1.5.0, < 2.0.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.10.0, < 7.0.0"
    }
  }
}

variable "project_id" {
  description = "Project of the existing buckets and of everything the module creates."
  type        = string
}

variable "function_http_zip" {
  description = "dist/function_http-<hash>.zip, as `retrain-trigger package --tfvars` writes it."
  type        = string
}

variable "function_gcs_zip" {
  description = "dist/function_gcs-<hash>.zip, as `retrain-trigger package --tfvars` writes it."
  type        = string
}

variable "oncall_channel" {
  description = "Notification channel of the on-call rotation: projects/<project>/notificationChannels/<id>."
  type        = string
}

provider "google" {
  project = var.project_id
  region  = "us-central1"
}

module "retrain" {
  source = "../.."

  project_id  = var.project_id
  region      = "us-central1"
  name_prefix = "churn"

  create_data_bucket      = false
  data_bucket             = "${var.project_id}-raw-events"
  data_prefixes           = ["incoming/", "exports/daily/"]
  create_artifacts_bucket = false
  artifacts_bucket        = "${var.project_id}-ml-artifacts"

  function_http_zip = var.function_http_zip
  function_gcs_zip  = var.function_gcs_zip
  enable_windows    = true

  # Cloud Build compiles this team's pipeline, not the MNIST example.
  training_image_name     = "churn-trainer"
  training_dockerfile     = "training/Dockerfile"
  pipeline_compile_module = "training.compile"
  pipeline_template_dir   = "training/compiled"
  pipeline_template_name  = "churn_pipeline.yaml"
  config_file             = "retrain.yaml"

  notification_channels = [var.oncall_channel]
  alert_no_success_days = 3
}

output "service_accounts" {
  description = "Accounts to name in the routes (pipeline) and in other projects' grants."
  value       = module.retrain.service_accounts
}

output "outcome_topic" {
  description = "Give it to the pipeline's exit task."
  value       = module.retrain.outcome_topic
}

output "notification_topic" {
  description = "Subscribe the team's chat bridge here."
  value       = module.retrain.notification_topic
}
