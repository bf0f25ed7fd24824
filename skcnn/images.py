"""Pictures as users hold them: files, value ranges, layouts, and preparing a
picture the way a model's training images were made.

Pillow decodes every file (``ImageOps.exif_transpose`` turns phone photos
upright; modes 1, L, P, LA, RGB, RGBA, CMYK, I;16, I and F are read at their
own bit depth). Everything else here is a few lines of NumPy and SciPy.

How a picture becomes a model's input depends on how the model's training
images were made, its *framing* (see :data:`FRAMINGS`):

- ``"mnist"``: the ink is cut out, scaled so its longer side fills 20/28 of
  the frame and centred by its centre of mass, light on dark (MNIST);
- ``"fill"``: the ink is cut out and its longer side fills the frame,
  centred, light on dark (scikit-learn's 8x8 digits, Fashion-MNIST);
- ``"whole"``: the whole picture is resized to the frame, colours kept
  (:func:`skcnn.datasets.load_image_folder`).
"""

import warnings

import numpy as np

__all__ = [
    "CHANNEL_COUNTS",
    "FRAMINGS",
    "guess_data_format",
    "to_unit_range",
    "read_image",
    "is_gray",
    "resize",
    "prepare_image",
    "otsu_threshold",
]

#: Channel counts a picture can have: grey, grey + alpha, RGB, RGBA (or CMYK).
CHANNEL_COUNTS = (1, 2, 3, 4)

#: How training images were framed, by name (see the module docstring).
FRAMINGS = {
    "mnist": "ink cut out, longer side 20/28 of the frame, centred by mass, light on dark",
    "fill": "ink cut out, longer side filling the frame, centred, light on dark",
    "whole": "the whole picture resized to the frame, colours kept",
}

COLORS = ("gray", "rgb")

# ITU-R 601 luma weights, as Pillow's convert("L") uses
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

# Larger pictures are shrunk to this many pixels on their longer side before
# the ink is looked for: the result is at most a few dozen pixels wide.
_WORK_SIZE = 512


def guess_data_format(shape):
    """Which axis of one image ``(a, b, c)`` holds its channels, by its size.

    A channel axis has 1 to 4 entries (:data:`CHANNEL_COUNTS`). When only the
    first axis has, the image is channels-first ``(C, H, W)``; when only the
    last has, channels-last ``(H, W, C)``. When both or neither have, the
    shape does not say (``(3, 4, 3)``, ``(1, 8, 1)``, ``(16, 8, 8)``).

    Parameters
    ----------
    shape : tuple of 3 ints

    Returns
    -------
    {"channels_first", "channels_last"} or None
        None when the shape is ambiguous (a 1x1x1 image is channels-first).

    Examples
    --------
    >>> guess_data_format((28, 28, 1)), guess_data_format((3, 32, 32))
    ('channels_last', 'channels_first')
    >>> guess_data_format((3, 4, 3)) is None
    True
    """
    a, b, c = shape
    first, last = a in CHANNEL_COUNTS, c in CHANNEL_COUNTS
    if first and not last or a == b == c == 1:
        return "channels_first"
    if last and not first:
        return "channels_last"
    return None


def to_unit_range(pixels, source=None):
    """Pixel values as float32 in [0, 1], the range decided by the dtype.

    Integers are divided by the largest value of their type (bit depth):
    uint8 by 255, uint16 by 65535, int16 by 32767; negative values become 0,
    with a warning (0-255 stored as int8 wraps around to negative values).
    Floats (and booleans) already are in [0, 1]; values outside (a bicubic
    resize overshoots to 1.2) are clipped. The values themselves never decide
    the range, so one bright pixel cannot rescale a whole image.

    Parameters
    ----------
    pixels : array-like of numbers
    source : str, optional
        Where the pixels come from (a file name), for the warnings.

    Returns
    -------
    ndarray of float32, same shape

    Raises
    ------
    ValueError
        Non-numeric or non-finite values.

    Warns
    -----
    UserWarning
        Floats far outside [0, 1] (above 2 or below -1), such as 0-255
        values held as floats: they are clipped, which is rarely meant.
        Negative values of a signed integer type: they become 0.

    Examples
    --------
    >>> to_unit_range(np.array([0, 51, 255], dtype=np.uint8))
    array([0. , 0.2, 1. ], dtype=float32)
    >>> to_unit_range(np.array([0.5, 1.0000001, 1.19]))
    array([0.5, 1. , 1. ], dtype=float32)
    """
    a = np.asarray(pixels)
    if a.dtype.kind == "b":
        return a.astype(np.float32)
    if a.dtype.kind in "ui":
        top = np.iinfo(a.dtype).max
        out = a.astype(np.float32) / np.float32(top)
        low = a.min() if a.dtype.kind == "i" and a.size else 0
        if low < 0:
            unsigned = f"np.uint{a.dtype.itemsize * 8}"
            warnings.warn(
                f"{'' if source is None else f'{source}: '}{a.dtype} pixel values down to {low}: "
                f"negative values are read as 0 (black), the others divided by {top}. If these are "
                f"0-{2 * top + 1} values stored in a signed type (above {top} they wrap around to "
                f"negative ones), every pixel is misread: reinterpret them as unsigned first, "
                f"to_unit_range(pixels.view({unsigned}))",
                UserWarning,
                stacklevel=2,
            )
            np.maximum(out, 0, out=out)
        return out
    if a.dtype.kind != "f":
        raise ValueError(f"pixel values must be numbers; got dtype {a.dtype}")
    out = a.astype(np.float32)
    if not np.isfinite(out).all():
        raise ValueError("pixel values must be finite; got NaN or infinity")
    if out.size and (out.max() > 2 or out.min() < -1):
        warnings.warn(
            f"float pixel values from {out.min():g} to {out.max():g}: floats are read as "
            "[0, 1] and clipped to it; pass integers (e.g. uint8 for 0-255) or divide by "
            "the largest possible value first",
            UserWarning,
            stacklevel=2,
        )
    return np.clip(out, 0, 1)


# -- reading -----------------------------------------------------------------------


def _from_pil(im):
    """A Pillow image as (pixels, alpha): float32 (H, W) or (H, W, 3) in
    [0, 1], and (H, W) opacity or None. Each mode at its own bit depth."""
    mode = im.mode
    if mode in ("1", "L", "F") or mode.startswith("I;16"):  # I;16, I;16B, I;16L, I;16N
        return to_unit_range(np.asarray(im)), None
    if mode == "I":  # 32-bit ints; 16-bit files (PNG, TIFF) often open this way
        values = np.asarray(im)
        if values.size and values.min() >= 0 and values.max() <= 65535:
            return to_unit_range(values.astype(np.uint16)), None
        return to_unit_range(values), None
    if mode in ("P", "PA"):  # palette: its colours, and transparency if any
        has_alpha = mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
    elif mode in ("LA", "La"):
        im = im.convert("LA")
    elif mode != "RGB":  # RGBA, RGBa, RGBX, CMYK, YCbCr, LAB, HSV
        im = im.convert("RGBA" if "A" in mode or "a" in mode else "RGB")
    array = to_unit_range(np.asarray(im))
    if im.mode == "LA":
        return array[..., 0], array[..., 1]
    if im.mode == "RGBA":
        return array[..., :3], array[..., 3]
    return array, None


def _from_array(image):
    """An ndarray picture as (pixels, alpha), like :func:`_from_pil`."""
    a = np.asarray(image)
    if a.ndim == 3:
        layout = guess_data_format(a.shape)
        if layout is None:
            raise ValueError(
                f"a picture of shape {a.shape} is ambiguous: pass (H, W), (H, W, C) or "
                f"(C, H, W) with C in {CHANNEL_COUNTS} on exactly one end"
            )
        if layout == "channels_first":
            a = np.moveaxis(a, 0, -1)  # (C, H, W) -> (H, W, C)
        if a.shape[2] == 1:
            a = a[..., 0]
    elif a.ndim != 2:
        raise ValueError(f"a picture must be a 2-D or 3-D array; got shape {a.shape}")
    if min(a.shape[:2]) == 0:
        raise ValueError(f"a picture must have pixels; got shape {a.shape}")
    a = to_unit_range(a)
    if a.ndim == 2:
        return a, None
    channels = a.shape[2]
    if channels == 2:
        return a[..., 0], a[..., 1]
    if channels == 4:
        return a[..., :3], a[..., 3]
    return a, None


def _decode(image):
    """(pixels, alpha) of a file path or an ndarray."""
    if isinstance(image, np.ndarray):
        return _from_array(image)
    from PIL import Image, ImageOps

    with Image.open(image) as im:
        im = ImageOps.exif_transpose(im)  # phone photos: upright as viewers show them
        return _from_pil(im)


def _gray(pixels):
    return pixels if pixels.ndim == 2 else pixels @ _LUMA


def _on_backdrop(pixels, alpha, backdrop):
    """Transparent parts replaced by a backdrop of brightness ``backdrop``."""
    if alpha is None:
        return pixels
    a = alpha if pixels.ndim == 2 else alpha[..., None]
    return pixels * a + np.float32(backdrop) * (1 - a)


def _convert(pixels, color):
    if color == "gray":
        return _gray(pixels)
    return np.repeat(pixels[..., None], 3, axis=2) if pixels.ndim == 2 else pixels


def _check_color(color, allowed=("auto", *COLORS)):
    if color not in allowed:
        raise ValueError(f"color must be one of {list(allowed)}; got {color!r}")


def read_image(image, color="auto"):
    """Read a picture file (or take an array) as float32 values in [0, 1].

    Pillow decodes the file; an EXIF orientation is applied, so a phone
    photo comes out upright, as viewers show it. 16-bit and float files keep
    their precision (32-bit integer pictures whose values fit in 16 bits, as
    Pillow opens some 16-bit files, are read as 16-bit); palette pictures
    keep their colours; transparent parts become white paper.

    Parameters
    ----------
    image : str, path-like or ndarray
        A file Pillow can read (PNG, JPEG, GIF, BMP, TIFF, WebP, ...), or an
        array (H, W), (H, W, C) or (C, H, W) with C in 1-4 (grey, grey +
        alpha, RGB, RGBA), its range decided by its dtype
        (:func:`to_unit_range`).
    color : {"auto", "gray", "rgb"}, default="auto"
        "auto" keeps the picture's own: grey modes give (H, W), colour modes
        (H, W, 3).

    Returns
    -------
    ndarray of float32, (H, W) or (H, W, 3)

    Raises
    ------
    OSError
        The file cannot be opened or decoded (``PIL.UnidentifiedImageError``
        for a file that is no picture, a truncated file, ...).
    ValueError
        An array of no picture's shape.
    """
    _check_color(color)
    pixels, alpha = _decode(image)
    pixels = _on_backdrop(pixels, alpha, 1.0)
    return pixels if color == "auto" else _convert(pixels, color)


def is_gray(pixels, tolerance=8 / 255):
    """Whether a picture from :func:`read_image` is grey: one channel, or
    three that differ by at most ``tolerance`` (JPEG's colour noise)."""
    if pixels.ndim == 2:
        return True
    return bool(np.ptp(pixels, axis=2).max(initial=0) <= tolerance)


def resize(pixels, shape, resample="lanczos"):
    """Resize (H, W) or (H, W, C) float32 pixels to ``shape`` = (H', W').

    Each channel is resized as a 32-bit float image by Pillow (no rounding
    to 8 bits); the result is clipped to [0, 1] (Lanczos overshoots).
    """
    from PIL import Image

    filters = {
        "lanczos": Image.Resampling.LANCZOS,
        "bicubic": Image.Resampling.BICUBIC,
        "box": Image.Resampling.BOX,
    }
    h, w = shape
    if pixels.shape[:2] == (h, w):
        return pixels.astype(np.float32, copy=True)
    channels = [pixels] if pixels.ndim == 2 else [pixels[..., i] for i in range(pixels.shape[2])]
    out = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(ch, dtype=np.float32)).resize(
                (w, h), filters[resample]
            )
        )
        for ch in channels
    ]
    out = out[0] if pixels.ndim == 2 else np.stack(out, axis=2)
    return np.clip(out, 0, 1)


# -- ink on paper ------------------------------------------------------------------


def otsu_threshold(values, bins=256):
    """Otsu's threshold: the value that best splits ``values`` into two classes.

    It maximises the between-class variance of the histogram (N. Otsu, "A
    threshold selection method from gray-level histograms", IEEE Trans. SMC
    9(1), 1979).

    Parameters
    ----------
    values : array-like of floats
    bins : int, default=256

    Returns
    -------
    float
        Values above it form one class, the rest the other (the middle of
        the gap when several cuts split alike); the value of a constant array.

    Examples
    --------
    >>> round(otsu_threshold([0.1, 0.12, 0.11, 0.8, 0.82]), 2)
    0.46
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return lo
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)[:-1]  # pixels at or below each cut
    weight_high = len(v) - weight_low
    sum_low = np.cumsum(counts * centres)[:-1]
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] + counts[-1] * centres[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))  # a plateau between two gaps
    return float((edges[1:-1][best[0]] + edges[1:-1][best[-1]]) / 2)


def _smooth_fit(image, mask, max_points=8192):
    """The quadratic surface a + bx + cy + dx^2 + exy + fy^2 closest (least
    squares) to ``image`` where ``mask`` is true, evaluated everywhere.

    Fitted to at most ``max_points`` of the masked pixels, evenly spread
    (six coefficients need no more)."""
    h, w = image.shape
    rows, cols = np.nonzero(mask)
    step = max(1, len(rows) // max_points)
    rows, cols = rows[::step], cols[::step]
    y, x = rows * (2 / max(h - 1, 1)) - 1, cols * (2 / max(w - 1, 1)) - 1  # in [-1, 1]
    terms = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=1)
    # normal equations (6 x 6; with x, y in [-1, 1] they are well conditioned)
    gram = terms.T @ terms + 1e-9 * np.eye(6)
    a, b, c, d, e, f = np.linalg.solve(gram, terms.T @ image[rows, cols].astype(np.float64))
    y, x = np.linspace(-1, 1, h)[:, None], np.linspace(-1, 1, w)[None, :]
    return (a + b * x + c * y + d * x * x + e * x * y + f * y * y).astype(np.float32)


def _blank(name):
    return ValueError(f"{name}: it is blank (no ink stands out from the paper)")


def _paper(gray):
    """The paper's brightness under the ink, and which pixels are paper.

    Starting from the pixels as bright as most of the picture's border
    (paper around the drawing, which ink may touch here and there), a
    quadratic surface a + bx + cy + dx^2 + exy + fy^2 is fitted by least
    squares, again and again to the pixels that lie within 3 robust standard
    deviations (1.4826 x the median absolute deviation) of it: the ink drops
    out, and the surface follows the paper wherever the light falls
    unevenly across it.
    """
    # start from the brightness of most of the picture's border: paper around
    # the drawing, which the ink may touch here and there
    border = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
    level = np.median(border)
    spread = max(1.4826 * np.median(np.abs(border - level)), 1e-4)
    keep = np.abs(gray - level) <= 3 * spread
    if keep.sum() < 6:  # a tiny picture, or a border of two halves
        keep = np.ones(gray.shape, dtype=bool)
    for _ in range(10):
        surface = _smooth_fit(gray, keep)
        residual = gray - surface
        level = np.median(residual[keep])
        spread = max(1.4826 * np.median(np.abs(residual[keep] - level)), 1e-4)
        paper = np.abs(residual - level) <= 3 * spread
        if paper.sum() < 6 or np.array_equal(paper, keep):
            break
        keep = paper
    return surface, keep


def _ink(gray, name):
    """Ink of a picture as an (H, W) map: 1 for ink, 0 for paper.

    The paper's brightness is estimated across the picture (:func:`_paper`),
    so unevenly lit paper stays paper. What lies off it is ink, dark or light
    (whichever side holds more of it); Otsu's threshold on how far pixels lie
    off the paper separates clear strokes from the paper's noise. Ink is
    scaled so that a typical stroke is 1; specks not touching a stroke go.
    """
    from scipy import ndimage

    h, w = gray.shape
    if max(h, w) > _WORK_SIZE:
        scale = _WORK_SIZE / max(h, w)
        gray = resize(gray, (max(1, round(h * scale)), max(1, round(w * scale))), "box")
    surface, paper = _paper(gray)
    # ink and paper reflect shares of the light falling on them: measured
    # against the paper there, a stroke is as strong in shadow as in light
    residual = (gray - surface) / np.maximum(surface, 0.02)
    off = residual[~paper]
    light_ink = off.clip(0, None).sum() > (-off).clip(0, None).sum()
    darkness = residual if light_ink else -residual  # how much inkier than paper
    level = np.median(darkness[paper])
    noise = 1.4826 * np.median(np.abs(darkness[paper] - level))
    darkness = darkness - level
    cut = otsu_threshold(darkness)
    ink = darkness > cut
    # ink must stand clear of the paper's own noise (Otsu also splits pure noise in two)
    if not ink.any() or ink.all() or darkness[ink].mean() < max(6 * noise, 1e-3):
        raise _blank(name)
    floor = min(3 * noise, cut)
    top = np.percentile(darkness[ink], 75)
    out = np.clip((darkness - floor) / max(top - floor, 1e-6), 0, 1).astype(np.float32)
    parts, _ = ndimage.label(out > 0)
    out[~np.isin(parts, np.unique(parts[ink]))] = 0
    return out


def _shift(image, dy, dx):
    """Shift by whole pixels, filling with 0 (no wrap-around)."""
    out = np.zeros_like(image)
    h, w = image.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = image[ys, xs]
    return out


def _frame(ink, shape, framing):
    """Cut the ink out and place it in a frame of ``shape`` as ``framing`` says."""
    rows, cols = np.nonzero(ink > 0.05)
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = shape
    if framing == "mnist":
        box = max(1, round(min(h, w) * 20 / 28))
        scale = box / max(ink.shape)
    else:  # "fill": the longer side fills the frame
        scale = min(h / ink.shape[0], w / ink.shape[1])
    # "fill" frames at 4x the size and averages 4x4 blocks, as the 8x8 digits
    # were made from 32x32 bitmaps: an off-centre edge leaves a faint column
    fine = 4 if framing == "fill" else 1
    H, W, scale = h * fine, w * fine, scale * fine
    size = (min(H, max(1, round(ink.shape[0] * scale))), min(W, max(1, round(ink.shape[1] * scale))))
    out = np.zeros((H, W), dtype=np.float32)
    top, left = (H - size[0]) // 2, (W - size[1]) // 2
    out[top : top + size[0], left : left + size[1]] = resize(ink, size, "lanczos")
    if fine > 1:
        out = out.reshape(h, fine, w, fine).mean(axis=(1, 3))
    if framing == "mnist":  # centre of mass to the centre, as MNIST's digits were
        mass = out.sum()
        ys, xs = np.indices(shape)
        dy = int(round((h - 1) / 2 - (ys * out).sum() / mass))
        dx = int(round((w - 1) / 2 - (xs * out).sum() / mass))
        out = _shift(out, dy, dx)
    peak = out.max()
    return out / peak if peak > 0 else out


def prepare_image(image, shape=(28, 28), *, framing="mnist", color="gray"):
    """Turn a picture into an input for a model, the way its training images were made.

    For the ink framings ("mnist", "fill") the picture is read as ink on
    paper: grey; the paper is found by Otsu's threshold and the picture's
    border, inverted when the ink is the lighter; the paper's brightness is
    estimated locally, so uneven light does not turn paper into ink; the ink
    is cut out and placed as the framing says (see :data:`FRAMINGS`), light
    on dark, its brightest value 1. "whole" resizes the whole picture.

    Parameters
    ----------
    image : str, path-like or ndarray
        A picture file, or an array (H, W), (H, W, C) or (C, H, W) with C in
        1-4; the value range is decided by the dtype (:func:`to_unit_range`).
    shape : (H, W), default=(28, 28)
        Size of the result.
    framing : {"mnist", "fill", "whole"}, default="mnist"
    color : {"gray", "rgb"}, default="gray"
        "rgb" only with framing="whole".

    Returns
    -------
    ndarray of float32 in [0, 1]
        (H, W) for "gray"; (3, H, W) for "rgb" (channels-first, like
        :func:`skcnn.datasets.load_image_folder` and ``input_shape_``).

    Raises
    ------
    ValueError
        A blank picture (no ink stands out), an array of no picture's shape,
        an unknown framing or color.
    OSError
        A file that cannot be read.
    """
    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {list(FRAMINGS)}; got {framing!r}")
    _check_color(color, COLORS)
    if color == "rgb" and framing != "whole":
        raise ValueError(f"framing={framing!r} makes grey ink maps; use color='gray'")
    name = "the image" if isinstance(image, np.ndarray) else str(image)
    pixels, alpha = _decode(image)
    if framing == "whole":  # as load_image_folder: resized, then converted
        out = _convert(resize(_on_backdrop(pixels, alpha, 1.0), tuple(shape)), color)
        return out if out.ndim == 2 else np.ascontiguousarray(out.transpose(2, 0, 1))
    gray = _gray(pixels)
    try:
        ink = _ink(_on_backdrop(gray, alpha, 1.0), name)
    except ValueError:
        if alpha is None or np.ptp(alpha) == 0:
            raise
        ink = _ink(_on_backdrop(gray, alpha, 0.0), name)  # light strokes on transparency
    return _frame(ink, tuple(shape), framing)
