# A module: the caller configures the providers (see examples/). google-beta serves one resource
# only, the status page's Cloud Run service (ui.tf), whose iap_enabled argument the google
# provider 6.x does not have; without a provider "google-beta" block of the caller's, Terraform
# gives it an empty configuration (Application Default Credentials, every resource names its
# project).
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
