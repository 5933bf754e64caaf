"""Recompile the training pipeline spec.

    python -m pipeline_specs.compile [--image IMAGE] [--output PATH]

``--image`` is the base image of every component (the deploy build passes the training image
built from ``pipeline_specs/Dockerfile``, by digest); it defaults to ``python:3.12-slim``, which
only suits local runs. ``--output`` defaults to ``pipeline_specs/mnist_training.yaml``.
"""

import argparse
import sys

from pipeline_specs.mnist_training import DEFAULT_IMAGE, DEFAULT_OUTPUT, compile_pipeline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline_specs.compile", description=__doc__.strip().splitlines()[0]
    )
    parser.add_argument(
        "--image",
        default=DEFAULT_IMAGE,
        help=f"base image for every component (default: {DEFAULT_IMAGE})",
    )
    parser.add_argument(
        "--output", default=DEFAULT_OUTPUT, help=f"where to write (default: {DEFAULT_OUTPUT})"
    )
    args = parser.parse_args(argv)
    print(compile_pipeline(args.output, args.image))
    return 0


if __name__ == "__main__":
    sys.exit(main())
