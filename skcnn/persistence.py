"""Parameter files: a network's arrays in a ``.npz`` plus JSON metadata.

Loading never unpickles (``numpy.load(..., allow_pickle=False)``), so a file
from a stranger cannot run code: the worst it can do is fail to load. Whole
estimators (optimizer state included) are saved with joblib instead, which
*does* unpickle: load those only from sources you trust.

Layout of a file: one array per learnable array or buffer, named
``"<layer index>.<name>"`` (``"1.W"``, inside a residual block
``"5.0.W"``), the class labels in ``"classes"``, and a JSON document in the
0-d string array ``"__meta__"``: the format, the input shape, the layer list
(each layer's config, the output layer included), the dtype and free notes.
A model that predicts with an average of its weights
(:class:`~skcnn.network.WeightAverage`) also holds the averaged arrays, named
``"average.<name>"``, and the average's decay and step count in the JSON.
"""

import json
import zipfile
from typing import NamedTuple

import numpy as np

from .network import Network, WeightAverage

__all__ = ["FORMAT", "save_network", "load_network", "LoadedNetwork", "ParameterFileError"]

#: Written into every file; a file with another format is refused.
FORMAT = "skcnn-params-2"  # 1: fixed VGG-style stacks, kernels (F, K, K, C)


class ParameterFileError(ValueError):
    """A parameter file is unreadable, corrupt or of the wrong architecture."""


class LoadedNetwork(NamedTuple):
    """What :func:`load_network` reads from a parameter file."""

    network: Network  # its .spec is the layer list, .input_shape (C, H, W)
    classes: np.ndarray
    extra: dict  # JSON notes: version, history, the user's ``metadata``
    average: WeightAverage = None  # the weights prediction uses, if averaged


def save_network(path, network, classes, extra=None, average=None):
    """Write ``network``'s arrays and its layer list to ``path`` (.npz), and
    the averaged arrays of ``average`` (a WeightAverage of it) if given."""
    classes = np.asarray(classes)
    if classes.dtype == object:
        classes = classes.astype(str)
    meta = {
        "format": FORMAT,
        "input_shape": list(network.input_shape),
        "layers": network.spec,
        "dtype": network.dtype.name,
        "extra": extra or {},
    }
    arrays = network.state_dict()
    if average is not None:
        meta["average"] = {"decay": average.decay, "n_updates": average.n_updates}
        arrays.update({f"average.{name}": v for name, v in average.network.state_dict().items()})
    arrays["classes"] = classes
    arrays["__meta__"] = np.array(json.dumps(meta))
    with open(path, "wb") as f:  # a file object: numpy would append ".npz" to a bare name
        np.savez(f, **arrays)


def load_network(path):
    """Read a file written by :func:`save_network`.

    Returns
    -------
    LoadedNetwork
        ``(network, classes, extra)``: the network rebuilt from the file's
        layer list and holding its arrays, the class labels, and the JSON notes.

    Raises
    ------
    ParameterFileError
        Not an npz file, truncated, missing or extra arrays, wrong shapes or
        dtypes, non-finite weights, or any content that would need pickle.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ParameterFileError(f"{path}: not a readable skcnn parameter file ({exc})") from exc
    try:
        meta = json.loads(str(arrays.pop("__meta__")))
        if meta.get("format") != FORMAT:
            raise ParameterFileError(f"{path}: unknown format {meta.get('format')!r}; expected {FORMAT!r}")
        input_shape = tuple(int(v) for v in meta["input_shape"])
        spec = list(meta["layers"])
        dtype = np.dtype(meta["dtype"])
        classes = arrays.pop("classes")
        if dtype not in (np.float32, np.float64):
            raise ParameterFileError(f"{path}: unsupported dtype {dtype}")
    except ParameterFileError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ParameterFileError(f"{path}: missing or malformed metadata ({exc!r})") from exc
    try:
        # Build the described network (weights are overwritten below, so any seed will do)
        network = Network.from_layers(spec, input_shape, np.random.default_rng(0), dtype)
        average = None
        if meta.get("average") is not None:
            average = WeightAverage(network, float(meta["average"]["decay"]))
            average.n_updates = int(meta["average"]["n_updates"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ParameterFileError(f"{path}: cannot build the network it describes: {exc}") from exc
    n_outputs = getattr(network.layers[-1], "units", None)  # the output Dense layer
    if len(classes) != n_outputs:
        raise ParameterFileError(f"{path}: {len(classes)} class labels for a network with {n_outputs} outputs")
    expected = network.state_dict()
    if average is not None:
        expected.update({f"average.{name}": v for name, v in average.network.state_dict().items()})
    missing = sorted(set(expected) - set(arrays))
    unexpected = sorted(set(arrays) - set(expected))
    if missing or unexpected:
        raise ParameterFileError(
            f"{path}: the arrays do not match the architecture it describes "
            f"(missing {missing}, unexpected {unexpected})"
        )
    for name, want in expected.items():
        got = arrays[name]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise ParameterFileError(
                f"{path}: array {name!r} has shape {got.shape} and dtype {got.dtype}; "
                f"the architecture needs {want.shape} {want.dtype}"
            )
        if not np.isfinite(got).all():
            raise ParameterFileError(f"{path}: array {name!r} holds non-finite values")
    network.load_state_dict(arrays)
    if average is not None:
        average.network.load_state_dict({k[len("average.") :]: v for k, v in arrays.items() if k.startswith("average.")})
    return LoadedNetwork(network, classes, meta.get("extra", {}), average)
