"""skcnn: a convolutional neural network classifier written from scratch in NumPy.

The package reads bottom-up: :mod:`skcnn.functions` (array math) ->
:mod:`skcnn.layers` -> :mod:`skcnn.optimizers` -> :mod:`skcnn.network` ->
:mod:`skcnn.trainer` -> :mod:`skcnn.estimator` (:class:`CNNClassifier`).
"""

from ._version import __version__
from .estimator import CNNClassifier
from .persistence import ParameterFileError

__all__ = ["CNNClassifier", "ParameterFileError", "__version__"]
