from __future__ import annotations

import pytest

from retrain_trigger.config import parse_config
from retrain_trigger.errors import ConfigError, TemplateError
from retrain_trigger.service import Service
from retrain_trigger.spec import TemplateCache, parse_template
from tests.conftest import MNIST_TEMPLATE


@pytest.fixture(scope="module")
def mnist():
    return parse_template(MNIST_TEMPLATE.read_bytes(), str(MNIST_TEMPLATE))


ROUTE = """
project: p-12345
routes:
  - name: mnist
    template: {template}
    pipeline_root: gs://b/root
    parameters: {params}
    code: true
"""


# ----------------------------------------------------------------------------- gs:// templates


def _upload(bucket: str, name: str, data: bytes) -> None:
    from retrain_trigger import gcs

    gcs.write_bytes(f"gs://{bucket}/{name}", data, content_type="application/x-yaml")


def test_gs_template_through_fake_gcs(fake_gcs):
    fake_gcs.create_bucket("tmpl-bucket")
    _upload("tmpl-bucket", "mnist/v1/mnist_training.yaml", MNIST_TEMPLATE.read_bytes())
    cache = TemplateCache()
    template = cache.get("gs://tmpl-bucket/mnist/v1/mnist_training.yaml")
    assert template.pipeline_name == "mnist-training"
    assert cache.get("gs://tmpl-bucket/mnist/v1/mnist_training.yaml") is template


def test_gs_template_missing(fake_gcs):
    fake_gcs.create_bucket("tmpl-missing")
    with pytest.raises(TemplateError, match=r"gs://tmpl-missing/nope\.yaml not found"):
        TemplateCache().get("gs://tmpl-missing/nope.yaml")


def test_remote_check_reads_gs_templates(fake_gcs):
    fake_gcs.create_bucket("tmpl-check")
    _upload("tmpl-check", "t.yaml", MNIST_TEMPLATE.read_bytes())
    config = parse_config(
        ROUTE.format(template="gs://tmpl-check/t.yaml", params="{data_uri: x}"), env={}
    )
    with pytest.raises(ConfigError, match="required pipeline parameter"):
        Service.from_config(config, check_remote=True)
