import numpy as np
import pytest

from skcnn import CNNClassifier
from skcnn.augmentation import Augmenter, random_erase, random_flip, random_shift, translate


@pytest.fixture
def batch(rng):
    x = np.zeros((50, 1, 12, 12), dtype=np.float32)
    x[:, :, 4:8, 5:7] = rng.uniform(0.5, 1, (50, 1, 4, 2))  # a blob on a 0 background
    return x


def test_random_shift_moves_content_by_at_most_two_pixels(batch, rng):
    before = batch.copy()
    out = random_shift(batch, 2, rng)
    np.testing.assert_array_equal(batch, before)  # input untouched
    assert out.shape == batch.shape and out.dtype == batch.dtype
    np.testing.assert_allclose(out.sum(axis=(1, 2, 3)), batch.sum(axis=(1, 2, 3)), rtol=1e-6)
    shifts = set()
    for a, b in zip(batch[:, 0], out[:, 0]):
        ya, xa = np.argwhere(a > 0).min(axis=0)
        yb, xb = np.argwhere(b > 0).min(axis=0)
        assert abs(yb - ya) <= 2 and abs(xb - xa) <= 2
        shifts.add((yb - ya, xb - xa))
    assert len(shifts) > 5  # really random


def test_translate_moves_every_image_and_fills_with_its_corner_value():
    x = np.arange(2 * 3 * 5 * 6, dtype=np.float32).reshape(2, 3, 5, 6)
    before = x.copy()
    for dy, dx in [(1, 0), (-1, 0), (0, 2), (0, -2), (2, -1), (0, 0)]:
        out = translate(x, dy, dx)
        assert out.shape == x.shape and out.dtype == x.dtype
        for n in range(2):
            for c in range(3):
                for i in range(5):
                    for j in range(6):
                        si, sj = i - dy, j - dx  # the pixel that lands at (i, j)
                        inside = 0 <= si < 5 and 0 <= sj < 6
                        assert out[n, c, i, j] == (x[n, c, si, sj] if inside else x[n, c, 0, 0])
    np.testing.assert_array_equal(x, before)  # the input is untouched


def test_random_flip_mirrors_about_half(batch, rng):
    out = random_flip(batch, rng)
    flipped = [np.array_equal(o, b[:, :, ::-1]) and not np.array_equal(o, b) for o, b in zip(out, batch)]
    kept = [np.array_equal(o, b) for o, b in zip(out, batch)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 10 < sum(flipped) < 40


def test_random_erase_blanks_a_square_with_the_background(rng):
    x = np.ones((40, 1, 8, 8), dtype=np.float32)
    x[:, :, 0, 0] = 0.0  # corner = background
    out = random_erase(x, rng, size=0.25, p=0.5)
    erased = (out == 0).sum(axis=(1, 2, 3)) - 1
    assert set(np.unique(erased)) <= {0, 4}  # nothing, or one 2x2 square
    assert 5 < (erased == 4).sum() < 35


def test_augmenter_is_deterministic_and_rejects_unknown_names(batch):
    a = Augmenter("shift+flip+erase")(batch, np.random.default_rng(7))
    b = Augmenter("shift+flip+erase")(batch, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="augment must be"):
        Augmenter("rotate")


def test_augmentation_is_used_in_training_only(rng):
    X = rng.random((120, 1, 8, 8)).astype(np.float32)
    y = np.arange(120) % 3
    plain = CNNClassifier(max_iter=2, random_state=0).fit(X, y)
    augmented = CNNClassifier(max_iter=2, random_state=0, augment="shift+flip").fit(X, y)
    again = CNNClassifier(max_iter=2, random_state=0, augment="shift+flip").fit(X, y)
    assert plain.loss_curve_ != augmented.loss_curve_  # training saw other images
    np.testing.assert_array_equal(augmented.predict_proba(X), again.predict_proba(X))
    # prediction is deterministic: the same input gives the same output every time
    np.testing.assert_array_equal(augmented.predict_proba(X), augmented.predict_proba(X))
