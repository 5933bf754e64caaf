"""Training pipelines in the Kubeflow Pipelines v2 DSL, and the pieces they share.

- :mod:`pipeline_specs.mnist`: the ``mnist-training`` pipeline, one module per component;
  compiled to ``pipeline_specs/mnist_training.yaml`` by ``python -m pipeline_specs.compile``.
- :mod:`pipeline_specs.storage`: local / ``gs://`` reads and writes and the champion pointer's
  compare-and-swap, embedded into the components that use them.
- :mod:`pipeline_specs.reporting`: the run-outcome reporter (a final task under
  ``dsl.ExitHandler``) and the champion report, for any pipeline the trigger starts.

Sharing code between lightweight components: a KFP lightweight component is the source of one
function, copied into the compiled YAML and run as a program of its own; it cannot import this
package at run time. The helpers a component needs are therefore listed in its module's
``HELPERS`` and copied next to it (``dsl.component(..., additional_funcs=HELPERS)``): the compiled
spec stays self-contained, readable in review and deterministic (so a test can keep it in sync),
and runs the same on Vertex AI and in ``kfp.local``, on any image that has the third-party
libraries. The alternatives were weighed: a helper package baked into the image couples every
compiled spec to one image build and cannot run where the package is not installed (the local
stack's runner, a user's image); ``embedded_artifact_path`` embeds a gzip'd tarball whose bytes
change with file times, so the committed YAML could not be kept in sync, and it hides the code
from review. Each helper therefore imports what it uses inside its own body.
"""

DEFAULT_IMAGE = "python:3.12-slim"
