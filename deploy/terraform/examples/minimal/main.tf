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

output "cloudbuild_substitutions" {
  description = "Substitutions for deploy/cloudbuild.yaml."
  value       = module.retrain.cloudbuild_substitutions
}
