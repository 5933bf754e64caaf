"""Recompile the training pipeline spec.

    python -m pipeline_specs.compile [--image IMAGE] [--output PATH]

``--image`` is the base image of every component (the deploy build passes the training image
built from ``pipeline_specs/Dockerfile``, by digest); it defaults to ``python:3.12-slim``, which
only suits local runs. ``--output`` defaults to ``pipeline_specs/mnist_training.yaml``.
"""

import argparse
import sys
from collections.abc import Callable

from pipeline_specs import DEFAULT_IMAGE


def run(
    argv: list[str] | None,
    *,
    prog: str,
    description: str,
    default_output: str,
    compile_pipeline: Callable[[str, str], str],
) -> int:
    """The ``--image`` / ``--output`` command line shared by every pipeline's compile module."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--image",
        default=DEFAULT_IMAGE,
        help=f"base image for every component (default: {DEFAULT_IMAGE})",
    )
    parser.add_argument(
        "--output", default=default_output, help=f"where to write (default: {default_output})"
    )
    args = parser.parse_args(argv)
    print(compile_pipeline(args.output, args.image))
    return 0


def main(argv: list[str] | None = None) -> int:
    from pipeline_specs.mnist import DEFAULT_OUTPUT, compile_pipeline

    return run(
        argv,
        prog="python -m pipeline_specs.compile",
        description=__doc__.strip().splitlines()[0],
        default_output=DEFAULT_OUTPUT,
        compile_pipeline=compile_pipeline,
    )


if __name__ == "__main__":
    sys.exit(main())
