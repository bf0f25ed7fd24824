"""On-the-fly data augmentation for training batches of images (N, C, H, W).

Every function returns a new array (the input is never modified); the random
ones draw from the ``numpy.random.Generator`` they are given. Prediction
draws nothing at random: with ``test_time_shifts`` it averages over fixed
:func:`translate` copies (and with ``test_time_flips`` the mirror images).
"""

from functools import partial

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["translate", "random_shift", "random_flip", "random_erase", "AUGMENTATIONS", "Augmenter"]


def _pad_with_background(x, s):
    """``x`` (N, C, H, W) with ``s`` pixels added on every side, filled with
    each image's corner value (the background)."""
    n, c, h, w = x.shape
    padded = np.empty((n, c, h + 2 * s, w + 2 * s), dtype=x.dtype)
    padded[...] = x[:, :, :1, :1]
    padded[:, :, s : s + h, s : s + w] = x
    return padded


def translate(x, dy, dx):
    """Every image of ``x`` (N, C, H, W) moved ``dy`` pixels down and ``dx``
    right (negative: up, left), the uncovered pixels filled with the image's
    corner value as :func:`random_shift` fills them; same shape and dtype."""
    h, w = x.shape[2:]
    s = max(abs(dy), abs(dx))
    return _pad_with_background(x, s)[:, :, s - dy : s - dy + h, s - dx : s - dx + w]


def random_shift(x, max_shift, rng):
    """Shift each image by up to ``max_shift`` pixels in each direction,
    filling with the image's corner value (the background)."""
    n, c, h, w = x.shape
    s = max_shift
    padded = _pad_with_background(x, s)
    dy = rng.integers(0, 2 * s + 1, n)
    dx = rng.integers(0, 2 * s + 1, n)
    # (N, C, 2s+1, 2s+1, H, W): every shifted copy as a view; pick one per image
    windows = sliding_window_view(padded, (h, w), axis=(2, 3))
    return windows[np.arange(n), :, dy, dx]


def random_flip(x, rng):
    """Mirror a random half of the images left-right (clothes, not digits)."""
    out = x.copy()
    flip = rng.random(len(x)) < 0.5
    out[flip] = out[flip, :, :, ::-1]
    return out


def random_erase(x, rng, size=0.25, p=0.5):
    """Blank a random square of side ``size * min(H, W)`` in a fraction ``p``
    of the images with their corner value (Cutout / random erasing)."""
    n, c, h, w = x.shape
    side = max(1, int(round(size * min(h, w))))
    out = x.copy()
    hit = rng.random(n) < p
    top = rng.integers(0, h - side + 1, n)
    left = rng.integers(0, w - side + 1, n)
    rows = np.arange(h)[None, :, None]
    cols = np.arange(w)[None, None, :]
    mask = (
        hit[:, None, None]
        & (rows >= top[:, None, None])
        & (rows < top[:, None, None] + side)
        & (cols >= left[:, None, None])
        & (cols < left[:, None, None] + side)
    )  # (N, H, W)
    np.copyto(out, np.broadcast_to(x[:, :, :1, :1], out.shape), where=mask[:, None])
    return out


#: Augmentations by the name the estimator's ``augment`` parameter uses: each
#: a function ``f(x, rng)`` of a batch (N, C, H, W). A new one is one entry.
AUGMENTATIONS = {
    "shift": partial(random_shift, max_shift=2),  # up to 2 pixels: 7% of a 28-pixel side
    "flip": random_flip,
    "erase": random_erase,
}


class Augmenter:
    """A picklable ``f(x, rng)`` applying the augmentations named in ``spec``.

    ``spec`` is names from :data:`AUGMENTATIONS` joined by "+", e.g.
    ``"shift"`` or ``"shift+flip+erase"``; they are applied in the order of
    :data:`AUGMENTATIONS`, whatever the order in ``spec``.
    """

    def __init__(self, spec):
        names = spec.split("+") if isinstance(spec, str) else []
        if not names or any(name not in AUGMENTATIONS for name in names):
            raise ValueError(
                f"augment must be None or names from {tuple(AUGMENTATIONS)} joined by '+' "
                f"(e.g. 'shift+erase'); got {spec!r}"
            )
        self.names = names

    def __call__(self, x, rng):
        for name, augmentation in AUGMENTATIONS.items():
            if name in self.names:
                x = augmentation(x, rng=rng)
        return x

    def __repr__(self):
        return f"Augmenter({'+'.join(self.names)!r})"
