"""The train/test split artifact format of the churn pipeline: a CSV file with a header, the
feature columns first and the target column last. Embedded into the steps (``additional_funcs``).
"""

from collections.abc import Callable


def write_split(path: str, names: list, rows, labels, target_column: str) -> None:
    import csv

    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*names, target_column])
        for row, label in zip(rows, labels, strict=True):
            writer.writerow([*(repr(float(v)) for v in row), int(label)])


def read_split(path: str):
    """Returns ``(feature names, features, labels)`` written by :func:`write_split`."""
    import csv

    import numpy as np

    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        body = list(reader)
    values = np.array(body, dtype=np.float64).reshape(len(body), len(header))
    return header[:-1], values[:, :-1], values[:, -1].astype(np.int64)


HELPERS: tuple[Callable, ...] = (read_split,)
