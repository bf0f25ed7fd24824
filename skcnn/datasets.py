"""Image data sets: MNIST and Fashion-MNIST through OpenML, IDX files, digits,
folders of pictures.

Every loader returns float32 images scaled to [0, 1] and int64 labels:
``X_train, X_test, y_train, y_test``, with X of shape ``(n, 784)`` (flat,
the default, as scikit-learn passes data around) or ``(n, 1, 28, 28)``
(``shape="images"``). :func:`load_image_folder` returns a ``Bunch`` like
scikit-learn's ``load_files``.

:data:`DATASETS` names them: a loader, what each label means, the image
geometry and framing, one entry per data set (the ``skcnn`` command reads it).
"""

import gzip
import socket
import urllib.error
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import images as _images

__all__ = [
    "load_mnist",
    "load_fashion_mnist",
    "load_idx",
    "load_idx_dataset",
    "load_digits_images",
    "load_image_folder",
    "DatasetUnavailableError",
    "DEBIAN_FASHION_MNIST",
    "Dataset",
    "DATASETS",
    "FASHION_MNIST_CLASSES",
]

#: Where Debian's package dataset-fashion-mnist puts the IDX files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

#: OpenML data ids (a fixed version, not "active", so results do not drift).
OPENML_IDS = {"mnist": 554, "fashion-mnist": 40996}

# IDX type codes -> big-endian dtypes (http://yann.lecun.com/exdb/mnist/ format)
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DatasetUnavailableError(OSError):
    """A data set could not be downloaded and is not cached.

    Besides the message (advice for library users), ``dataset`` is the data
    set's name, ``reason`` why the download failed and ``where`` the cache
    that was searched, so that other front ends (the command line) can give
    advice in their own terms.
    """

    def __init__(self, message, dataset=None, reason=None, where=None):
        super().__init__(message)
        self.dataset, self.reason, self.where = dataset, reason, where

    def advice(self, what_to_do):
        """The message with ``what_to_do`` as its closing advice, for a front
        end that names its own options (e.g. "or give --idx DIR.")."""
        return _download_failed(self.dataset, self.reason, self.where, what_to_do)


def _download_failed(dataset, reason, where, what_to_do):
    return (
        f"Could not download {dataset} from OpenML ({reason}) and it is not cached in {where}. "
        f"Connect to the internet once (it is cached afterwards), {what_to_do}"
    )


def _shape_images(x, shape):
    if shape == "flat":
        return x.reshape(len(x), -1)
    if shape == "images":
        return x.reshape(len(x), 1, 28, 28) if x.ndim == 2 else x[:, None]
    raise ValueError(f"shape must be 'flat' or 'images'; got {shape!r}")


def _to_unit_float32(pixels):
    return np.asarray(pixels, dtype=np.float32) / np.float32(255.0)


def _standard_split(X, y):
    """The first 6/7 of the rows train, the rest test: 60,000 / 10,000 for
    the 70,000 rows of MNIST and Fashion-MNIST (OpenML keeps their order)."""
    n_train = round(len(X) * 6 / 7)
    return X[:n_train], X[n_train:], y[:n_train], y[n_train:]


def _fetch(name, data_home, shape):
    from sklearn.datasets import fetch_openml

    try:
        with warnings.catch_warnings():  # its "retrying" warnings: the error below says it all
            warnings.filterwarnings("ignore", message="A network error occurred")
            bunch = fetch_openml(
                data_id=OPENML_IDS[name],
                data_home=data_home,
                as_frame=False,
                parser="liac-arff",  # no pandas needed
                n_retries=1,
                delay=0.5,
            )
    except (urllib.error.URLError, socket.error, TimeoutError) as exc:
        where = data_home or "scikit-learn's data home (~/scikit_learn_data)"
        advice = (
            "pass data_home= pointing at a folder that holds the OpenML cache, or load the "
            "original IDX files with skcnn.datasets.load_idx_dataset(folder)."
        )
        raise DatasetUnavailableError(
            _download_failed(name, exc, where, advice), dataset=name, reason=str(exc), where=str(where)
        ) from exc
    X = _to_unit_float32(bunch.data)
    y = np.asarray(bunch.target).astype(np.int64)
    X_train, X_test, y_train, y_test = _standard_split(X, y)
    return _shape_images(X_train, shape), _shape_images(X_test, shape), y_train, y_test


def load_mnist(data_home=None, shape="flat"):
    """MNIST handwritten digits through ``sklearn.datasets.fetch_openml``.

    Downloaded once (about 15 MB) and cached under ``data_home``.

    Parameters
    ----------
    data_home : str or path, default=None
        scikit-learn's data folder; None uses ``~/scikit_learn_data``.
    shape : {"flat", "images"}, default="flat"
        ``(n, 784)`` or ``(n, 1, 28, 28)``.

    Returns
    -------
    X_train, X_test : float32 ndarrays in [0, 1], 60,000 and 10,000 images
    y_train, y_test : int64 ndarrays of digits 0-9

    Raises
    ------
    DatasetUnavailableError
        When OpenML cannot be reached and nothing is cached; it says how to
        fix it.
    """
    return _fetch("mnist", data_home, shape)


def load_fashion_mnist(data_home=None, shape="flat", local_dir=DEBIAN_FASHION_MNIST):
    """Fashion-MNIST (Zalando's 28x28 clothing images, 10 classes).

    Reads the IDX files in ``local_dir`` when they are there (Debian:
    ``apt-get install dataset-fashion-mnist``); otherwise fetches through
    OpenML like :func:`load_mnist`. Same returns and parameters, plus:

    Parameters
    ----------
    local_dir : str or path or None
        Folder with the four original IDX files; None always uses OpenML.
    """
    if local_dir is not None and _find_idx(Path(local_dir), "train", "images") is not None:
        return load_idx_dataset(local_dir, shape=shape)
    return _fetch("fashion-mnist", data_home, shape)


def load_idx(path):
    """Read one IDX file (the original MNIST format), gzipped or not.

    Parameters
    ----------
    path : str or path

    Returns
    -------
    ndarray
        With the file's dimensions and its element type in native byte order.

    Raises
    ------
    ValueError
        A bad magic number, an unknown element type, or a size that does not
        match the dimensions in the header (a truncated file).
    """
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: corrupt gzip data ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_TYPES:
        raise ValueError(f"{path}: unknown IDX element type 0x{type_code:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[type_code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: the header promises {dims} values ({expected} bytes) but the file "
            f"holds {len(raw) - header} bytes of data; it is truncated or corrupt"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def _find_idx(folder, split, kind):
    prefix = "t10k" if split == "test" else "train"
    suffix = "idx3-ubyte" if kind == "images" else "idx1-ubyte"
    for name in (f"{prefix}-{kind}-{suffix}", f"{prefix}-{kind}.{suffix}"):
        for ext in ("", ".gz"):
            candidate = folder / (name + ext)
            if candidate.is_file():
                return candidate
    return None


def load_idx_dataset(folder, shape="flat"):
    """Load the four standard IDX files (train/t10k images and labels) in ``folder``.

    Works for MNIST, Fashion-MNIST and any data set in that layout. Returns
    the same as :func:`load_mnist`: float32 images in [0, 1], whatever the
    files' element type. The range comes from the type, not the values
    (:func:`skcnn.images.to_unit_range`): unsigned bytes are divided by 255,
    int8/int16/int32 by 127/32767/2**31-1 (negative values become 0, with a
    warning), and float files are taken as [0, 1] already (values outside
    are clipped, with a warning when far outside).

    Files that hold 0-255 in signed bytes (type 0x09; values above 127 wrap
    around to negative ones) are misread so, and the warning says so; read
    them as unsigned yourself: ``to_unit_range(load_idx(path).view(np.uint8))``
    (:func:`load_idx`, :func:`skcnn.images.to_unit_range`).
    """
    folder = Path(folder)
    parts = []
    for split in ("train", "test"):
        images, labels = _find_idx(folder, split, "images"), _find_idx(folder, split, "labels")
        if images is None or labels is None:
            raise FileNotFoundError(
                f"{folder} lacks the {split} IDX files (expected e.g. "
                f"{'t10k' if split == 'test' else 'train'}-images-idx3-ubyte[.gz] and "
                "...-labels-idx1-ubyte[.gz])"
            )
        x, y = load_idx(images), load_idx(labels).astype(np.int64)
        if len(x) != len(y):
            raise ValueError(f"{images.name} has {len(x)} images but {labels.name} {len(y)} labels")
        parts.append((_shape_images(_images.to_unit_range(x, source=images.name), shape), y))
    (X_train, y_train), (X_test, y_test) = parts
    return X_train, X_test, y_train, y_test


def load_digits_images(shape="images", test_size=0.25, random_state=0):
    """scikit-learn's bundled 8x8 digits, scaled to [0, 1], split stratified.

    Always available offline. ``shape`` as above (``(n, 1, 8, 8)`` or
    ``(n, 64)``). Returns ``X_train, X_test, y_train, y_test``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    X = _shape_images((digits.images / 16.0).astype(np.float32), shape)
    return train_test_split(
        X, digits.target.astype(np.int64), test_size=test_size, random_state=random_state,
        stratify=digits.target,
    )  # fmt: skip


#: What Fashion-MNIST's labels 0-9 stand for (Xiao, Rasul and Vollgraf, 2017).
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

_DIGITS = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class Dataset:
    """One entry of :data:`DATASETS`.

    Parameters
    ----------
    title : str
        How messages name it, e.g. "Fashion-MNIST".
    load : callable
        ``load(data_home, shape)`` returns ``X_train, X_test, y_train, y_test``
        as the loaders above do; may raise :class:`DatasetUnavailableError`.
    class_names : tuple of str
        ``class_names[label]`` is what the integer label stands for.
    image_shape : tuple of int
        ``(C, H, W)`` of one image.
    default_epochs : int
        Epochs ``skcnn train`` runs unless told otherwise.
    local_dir : path or None
        A folder known to hold the data set as IDX files (so that
        ``skcnn train --idx`` on it knows the class names).
    framing : {"mnist", "fill", "whole"}, default="mnist"
        How its images were made, so that :func:`skcnn.images.prepare_image`
        frames a user's picture the same way (see
        :data:`skcnn.images.FRAMINGS`): MNIST's digits sit in a 20x20 box
        centred by mass; scikit-learn's 8x8 digits and Fashion-MNIST's
        products fill their frame.
    """

    title: str
    load: Callable
    class_names: tuple
    image_shape: tuple
    default_epochs: int = 5
    local_dir: Path = None
    framing: str = "mnist"


def _load_digits(data_home, shape):
    return load_digits_images(shape=shape)


#: The data sets ``skcnn train --dataset NAME`` knows, by name. A new data set
#: is one more entry.
DATASETS = {
    "mnist": Dataset("MNIST", load_mnist, _DIGITS, (1, 28, 28), framing="mnist"),
    "fashion-mnist": Dataset(
        "Fashion-MNIST", load_fashion_mnist, FASHION_MNIST_CLASSES, (1, 28, 28),
        local_dir=DEBIAN_FASHION_MNIST, framing="fill",
    ),  # fmt: skip
    "digits": Dataset(
        "scikit-learn's 8x8 digits", _load_digits, _DIGITS, (1, 8, 8), default_epochs=30,
        framing="fill",
    ),
}


def _class_folders(root):
    """The class subfolders of ``root``, sorted, and the files beside them."""
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    return [p for p in entries if p.is_dir()], [p for p in entries if p.is_file()]


def _common_size(files):
    """The most common (H, W) among picture files, upright (from their headers)."""
    from PIL import Image

    sizes = []
    for file in files:
        try:
            with Image.open(file) as im:
                w, h = im.size
                if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientation: turned
                    w, h = h, w
        except Exception:  # reported when the file is read
            continue
        sizes.append((h, w))
    return Counter(sizes).most_common(1)[0][0] if sizes else (1, 1)


def load_image_folder(path, *, size=None, color="auto", return_X_y=False):
    """Load a folder of pictures with one subfolder per class.

    Like scikit-learn's ``load_files``: ``path/cat/1.jpg``, ``path/dog/a.png``,
    ... make the classes "cat" and "dog". Pillow reads every picture (PNG,
    JPEG, GIF, BMP, TIFF, WebP, ...; EXIF orientation applied; 16-bit and
    palette pictures at their own depth; transparency on white). Pictures of
    other sizes are resized to ``size`` (the whole picture, stretched if its
    aspect differs: Lanczos, as 32-bit floats), and all get the same colour
    mode. A file Pillow cannot read is skipped with a warning that names it;
    hidden files (".name") are ignored.

    Parameters
    ----------
    path : str or path-like
        The folder holding one subfolder per class.
    size : int or (H, W) or None, default=None
        Size of the returned images; None takes the most common size among
        the pictures (the first such in file order on a tie).
    color : {"auto", "gray", "rgb"}, default="auto"
        "auto": one grey channel when every picture is grey (grey modes, or
        colour modes whose channels differ by at most 8/255), else RGB.
    return_X_y : bool, default=False
        Return ``(data, target)`` instead of the Bunch.

    Returns
    -------
    Bunch with
        data : ndarray of float32, shape (n, C, H, W), values in [0, 1]
            C is 1 (grey) or 3 (RGB).
        target : ndarray of int64, shape (n,)
            Index into ``target_names``.
        target_names : list of str
            The class folders that hold at least one readable picture, sorted.
        filenames : ndarray of str, shape (n,)
        framing : "whole"
            How the images were made, for :func:`skcnn.images.prepare_image`.

    Raises
    ------
    FileNotFoundError
        ``path`` is not a folder.
    ValueError
        No class subfolders, or no readable picture in any of them.

    Warns
    -----
    UserWarning
        For each unreadable file (named, with Pillow's reason), for class
        folders without a readable picture, and for files lying directly in
        ``path`` (they belong to no class and are ignored).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name, colour in [("red", (255, 0, 0)), ("blue", (0, 0, 255))]:
    ...     (root / name).mkdir()
    ...     Image.new("RGB", (12, 10), colour).save(root / name / "a.png")
    >>> bunch = load_image_folder(root)
    >>> bunch.data.shape, bunch.target_names
    ((2, 3, 10, 12), ['blue', 'red'])
    """
    from sklearn.utils import Bunch

    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    _images._check_color(color)
    folders, loose = _class_folders(root)
    if loose:
        names = ", ".join(p.name for p in loose[:5]) + (", ..." if len(loose) > 5 else "")
        warnings.warn(
            f"{root}: {len(loose)} file(s) lie outside the class subfolders and were ignored: {names}",
            UserWarning,
            stacklevel=2,
        )
    if not folders:
        raise ValueError(
            f"{root} has no subfolders: put the pictures of each class in a subfolder named "
            "after the class (e.g. cats/1.jpg, dogs/2.jpg)"
        )
    if size is not None:
        size = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
        if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in size):
            raise ValueError(f"size must be None, an int or (H, W) of positive ints; got {size!r}")
    files = {
        folder: sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        for folder in folders
    }
    if size is None:
        size = _common_size([f for fs in files.values() for f in fs])
    # each picture is resized as it is read (a folder of photos need not fit in memory)
    pictures, grey, labels, filenames, empty = [], [], [], [], []
    for folder, folder_files in files.items():
        found = 0
        for file in folder_files:
            try:
                pixels = _images.read_image(file)
            except Exception as exc:  # Pillow raises many kinds for broken or foreign files
                warnings.warn(f"skipped {file}: not a readable picture ({exc})", UserWarning, stacklevel=2)
                continue
            grey.append(_images.is_gray(pixels))
            pictures.append(_images.resize(pixels, size))
            labels.append(folder.name)
            filenames.append(str(file))
            found += 1
        if not found:
            empty.append(folder.name)
    if empty:
        warnings.warn(
            f"{root}: no readable picture in {', '.join(empty)}; "
            f"{'that class is' if len(empty) == 1 else 'those classes are'} left out",
            UserWarning,
            stacklevel=2,
        )
    if not pictures:
        raise ValueError(f"{root}: no readable picture in any class folder")
    if color == "auto":
        color = "gray" if all(grey) else "rgb"
    data = np.empty((len(pictures), 1 if color == "gray" else 3, *size), dtype=np.float32)
    for i, pixels in enumerate(pictures):
        pixels = _images._convert(pixels, color)
        data[i] = pixels if pixels.ndim == 2 else pixels.transpose(2, 0, 1)  # (H, W, C) -> (C, H, W)
    target_names = sorted(set(labels))
    target = np.searchsorted(target_names, labels).astype(np.int64)
    if return_X_y:
        return data, target
    return Bunch(
        data=data,
        target=target,
        target_names=target_names,
        filenames=np.asarray(filenames),
        framing="whole",
        DESCR=f"Pictures in {root}: {len(data)} in {len(target_names)} classes, "
        f"{data.shape[1]} channel(s) of {size[0]}x{size[1]} pixels.",
    )
