"""skcnn: a convolutional neural network classifier written from scratch in NumPy.

The package reads bottom-up: :mod:`skcnn.functions` (array math) ->
:mod:`skcnn.layers` -> :mod:`skcnn.optimizers` -> :mod:`skcnn.network` ->
:mod:`skcnn.trainer` -> :mod:`skcnn.estimator` (:class:`CNNClassifier`).
"""

__version__ = "0.1.0"

from .estimator import CNNClassifier  # noqa: E402
from .persistence import ParameterFileError  # noqa: E402

__all__ = ["CNNClassifier", "ParameterFileError", "__version__"]
