"""skcnn: a convolutional neural network classifier written from scratch in NumPy.

The package reads bottom-up: :mod:`skcnn.functions` (array math) ->
:mod:`skcnn.layers` -> :mod:`skcnn.optimizers` -> :mod:`skcnn.network` ->
:mod:`skcnn.trainer` -> :mod:`skcnn.estimator` (:class:`CNNClassifier`).
"""

from ._version import __version__
from .persistence import ParameterFileError

__all__ = ["CNNClassifier", "ParameterFileError", "__version__"]


def __getattr__(name):
    # The estimator (and with it scikit-learn, seconds to import) loads on
    # first use, so that `skcnn --help` and flag errors answer at once.
    if name == "CNNClassifier":
        from .estimator import CNNClassifier

        return CNNClassifier
    raise AttributeError(f"module 'skcnn' has no attribute {name!r}")
