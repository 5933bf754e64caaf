# Everything created by the module with its defaults: buckets, topics, both functions, service
# accounts, monitoring. From another repository, the source is the module's Git address, e.g.
#   source = "github.com/<owner>/retrain-trigger//deploy/terraform?ref=<tag>"
#
#   retrain-trigger package --config retrain.yaml --tfvars functions.auto.tfvars.json
#   terraform init && terraform apply -var project_id=my-project

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
  description = "Project to deploy into."
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

provider "google" {
  project = var.project_id
  region  = "europe-west1"
}

module "retrain" {
  source = "../.."

  project_id        = var.project_id
  function_http_zip = var.function_http_zip
  function_gcs_zip  = var.function_gcs_zip
}

output "data_bucket" {
  description = "Upload training data under data/ here."
  value       = module.retrain.data_bucket
}

output "pipeline_root" {
  description = "The routes' pipeline_root."
  value       = module.retrain.pipeline_root
}

# The outputs docs/deploy.md reads with `terraform output` in this folder.
output "cloudbuild_substitutions" {
  description = "Substitutions for deploy/cloudbuild.yaml."
  value       = module.retrain.cloudbuild_substitutions
}

output "cloudbuild_substitutions_flag" {
  description = "The same as one gcloud builds submit --substitutions value."
  value       = module.retrain.cloudbuild_substitutions_flag
}

output "service_accounts" {
  description = "Email of every service account by job."
  value       = module.retrain.service_accounts
}

output "http_audience" {
  description = "URL and ID-token audience of the HTTP function."
  value       = module.retrain.http_audience
}

output "template_repository_url" {
  description = "Artifact Registry KFP repository (the alternative template store)."
  value       = module.retrain.template_repository_url
}

output "outcome_topic" {
  description = "Topic the pipeline's exit task publishes run outcomes to."
  value       = module.retrain.outcome_topic
}

output "notification_topic" {
  description = "Topic of run-ended and champion-changed notifications."
  value       = module.retrain.notification_topic
}

output "http_function_url" {
  description = "Cloud Run URL of the HTTP function."
  value       = module.retrain.http_function_url
}
