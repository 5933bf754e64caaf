"""The ``mnist-training`` pipeline, one module per component.

Read in this order:

- :mod:`.load_data`: ``load-and-validate``, CSV shards (or a window manifest) to a train/test split
- :mod:`.train`: ``train-model``, a scikit-learn classifier and its metadata
- :mod:`.evaluate`: ``evaluate-model``, metrics for the model and the champion on the same split
- :mod:`.register`: ``gate-and-register``, the gate and the champion's compare-and-swap
- :mod:`.pipeline`: the DAG, its parameters, and :func:`~.pipeline.compile_pipeline`

Shared helpers: :mod:`._split` (the split artifact format) and :mod:`pipeline_specs.storage`.
Each component module lists in ``HELPERS`` the helper functions copied next to it into the
compiled spec (see :mod:`pipeline_specs` for why).
"""

from pipeline_specs.mnist.pipeline import (
    DEFAULT_OUTPUT,
    PIPELINE_NAME,
    build_components,
    build_pipeline,
    compile_pipeline,
)

__all__ = [
    "DEFAULT_OUTPUT",
    "PIPELINE_NAME",
    "build_components",
    "build_pipeline",
    "compile_pipeline",
]
