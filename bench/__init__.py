"""Benchmarks of retrain-trigger against the naive Cloud Function it replaces.

``python -m bench [--quick] [--only NAME] [--json PATH]`` starts fake-gcs-server and the fake
Vertex AI server on 127.0.0.1, runs both implementations as real ``functions-framework``
processes against them, prints a table (figure, ours, baseline, ratio, target, result) and
writes every number to ``bench/results/latest.json``.

The baseline is ``bench/baseline/main.py``: ``import google.cloud.aiplatform`` at module level,
``aiplatform.init`` + ``aiplatform.PipelineJob(...).submit()`` per event.
"""
