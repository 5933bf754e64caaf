"""Recompile the churn example's spec.

    python -m examples.churn.compile [--image IMAGE] [--output PATH]

``--image`` is the base image of every step (for Vertex AI: the training image built from
``pipeline_specs/Dockerfile``, by digest); ``--output`` defaults to
``examples/churn/churn_training.yaml``.
"""

import sys

from pipeline_specs.compile import run


def main(argv: list[str] | None = None) -> int:
    from examples.churn.pipeline import DEFAULT_OUTPUT, compile_pipeline

    return run(
        argv,
        prog="python -m examples.churn.compile",
        description=__doc__.strip().splitlines()[0],
        default_output=DEFAULT_OUTPUT,
        compile_pipeline=compile_pipeline,
    )


if __name__ == "__main__":
    sys.exit(main())
