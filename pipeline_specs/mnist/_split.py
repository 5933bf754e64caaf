"""The train/test split artifact format: one compressed ``.npz`` per split.

``load-and-validate`` writes both splits; ``train-model``, ``evaluate-model`` and
``gate-and-register`` read them. Embedded into those components (``additional_funcs``).
"""

from collections.abc import Callable


def save_split(path: str, features, labels, pixel_max: int) -> None:
    import numpy as np

    with open(path, "wb") as handle:  # a handle: np.savez would append ".npz" to a file name
        np.savez_compressed(handle, x=features, y=labels, pixel_max=np.int64(pixel_max))


def load_split(path: str):
    """Returns ``(features, labels, pixel_max)`` written by :func:`save_split`."""
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        return data["x"], data["y"], int(data["pixel_max"])


HELPERS: tuple[Callable, ...] = (load_split,)
