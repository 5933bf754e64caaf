"""The baseline: the retraining trigger most Cloud Functions samples show.

It imports ``google.cloud.aiplatform`` at module level and, per event, calls ``aiplatform.init``,
builds an ``aiplatform.PipelineJob`` from the compiled template in GCS and calls ``submit()``.
Folder placeholders are skipped; everything else is submitted, and any error escapes (a 409 for
a job id that exists answers 500, so the platform redelivers it).

Run offline by the benchmarks, against the same fakes as retrain-trigger:

- Vertex AI: ``aiplatform.init(api_endpoint="http://127.0.0.1:PORT", api_transport="rest",
  credentials=AnonymousCredentials())``. The GAPIC REST transport keeps an explicit ``http://``
  scheme in the endpoint, so the SDK talks plain HTTP to the fake Vertex server; nothing else
  is changed in the SDK's request path.
- Cloud Storage: ``STORAGE_EMULATOR_HOST`` points google-cloud-storage at fake-gcs-server, which
  holds the template and the pipeline-root bucket. ``PipelineJob`` reads the template from there
  and ``submit()`` checks the pipeline-root bucket there (``exists`` and ``reload``).
- Resource Manager: ``submit()`` looks up the project number to check that the pipeline-root
  bucket belongs to the project; nothing local answers that gRPC call, so with
  ``BASELINE_PROJECT_NUMBER`` set the lookup returns that constant (the number fake-gcs-server
  reports for its buckets). This removes one network round trip and a client construction per
  submitted event from the baseline, so it can only make the baseline look faster.
"""

import os
import re

import functions_framework
from google.cloud import aiplatform

PROJECT = os.environ.get("BASELINE_PROJECT", "bench-project")
REGION = os.environ.get("BASELINE_REGION", "us-central1")
TEMPLATE = os.environ.get("BASELINE_TEMPLATE", "gs://bench-templates/mnist/mnist_training.yaml")
PIPELINE_ROOT = os.environ.get("BASELINE_PIPELINE_ROOT", "gs://bench-data/pipeline-root")
STAGING_BUCKET = os.environ.get("BASELINE_STAGING_BUCKET", "gs://bench-data/staging")
REGISTRY = os.environ.get("BASELINE_REGISTRY", "gs://bench-data/models")
SERVICE_ACCOUNT = os.environ.get(
    "BASELINE_SERVICE_ACCOUNT", "trainer@bench-project.iam.gserviceaccount.com"
)
ENDPOINT = os.environ.get("BASELINE_VERTEX_ENDPOINT", "")

CREDENTIALS = None
if ENDPOINT.startswith("http://"):
    from google.auth.credentials import AnonymousCredentials

    CREDENTIALS = AnonymousCredentials()

if os.environ.get("BASELINE_PROJECT_NUMBER"):
    from google.cloud.aiplatform.utils import resource_manager_utils

    _NUMBER = os.environ["BASELINE_PROJECT_NUMBER"]

    def _project_number(project_id, credentials=None):
        return _NUMBER

    resource_manager_utils.get_project_number = _project_number


@functions_framework.cloud_event
def retrain_event(cloud_event):
    data = cloud_event.data
    bucket = data["bucket"]
    name = data["name"]
    if name.endswith("/"):
        print(f"skipped folder placeholder gs://{bucket}/{name}")
        return

    aiplatform.init(
        project=PROJECT,
        location=REGION,
        staging_bucket=STAGING_BUCKET,
        credentials=CREDENTIALS,
        api_endpoint=ENDPOINT or None,
        api_transport="rest" if ENDPOINT else None,
    )
    job_id = re.sub(r"[^a-z0-9-]+", "-", f"mnist-{name}-{data['generation']}".lower())[:128]
    job = aiplatform.PipelineJob(
        display_name="mnist-training",
        template_path=TEMPLATE,
        pipeline_root=PIPELINE_ROOT,
        parameter_values={
            "data_uri": f"gs://{bucket}/{name}",
            "model_registry_uri": REGISTRY,
        },
        job_id=job_id.strip("-"),
        enable_caching=False,
    )
    job.submit(service_account=SERVICE_ACCOUNT)
    print(f"submitted {job.resource_name}")
