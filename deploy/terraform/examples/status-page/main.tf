# The status page as a private Cloud Run service behind Identity-Aware Proxy: the team's group
# signs in with the browser; the operators' group may also use `gcloud run services proxy`.
# IAP on Cloud Run needs the project to belong to an organization.

terraform {
  required_version = ">= 1.5.0, < 2.0.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.10.0, < 7.0.0"
    }
    google-beta = {
      source  = "hashicorp/google-beta"
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

variable "ui_image" {
  description = "Status page image (retrain-trigger installed, configuration included), by digest."
  type        = string
}

provider "google" {
  project = var.project_id
  region  = "europe-west1"
}

provider "google-beta" {
  project = var.project_id
  region  = "europe-west1"
}

module "retrain" {
  source = "../.."

  project_id        = var.project_id
  function_http_zip = var.function_http_zip
  function_gcs_zip  = var.function_gcs_zip
  enable_windows    = true

  enable_ui      = true
  ui_image       = var.ui_image
  ui_invokers    = ["group:ml-oncall@example.com"]
  enable_ui_iap  = true
  ui_iap_members = ["group:ml-team@example.com"]
}

output "ui_url" {
  description = "Open in a browser (IAP signs you in)."
  value       = module.retrain.ui_url
}
