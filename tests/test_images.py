"""skcnn.images: pictures as users hold them (arrays, files), and ink on paper."""

import numpy as np
import pytest
from PIL import Image

from skcnn.images import guess_data_format, otsu_threshold, prepare_image, read_image, to_unit_range
from test_cli import render_digit


@pytest.fixture(scope="module")
def digit():
    """A dark 3 drawn on white paper: (H, W) float32 in [0, 1]."""
    return (render_digit(3, np.random.default_rng(5))[..., :3].mean(axis=2) / 255).astype(np.float32)


@pytest.fixture(scope="module")
def reference(digit):
    return prepare_image(digit)


def similarity(a, b):
    """Correlation of two prepared pictures, the best over shifts of up to
    a pixel (centring by mass may round either way)."""
    return max(
        float(np.corrcoef(np.roll(a, (dy, dx), axis=(0, 1)).ravel(), b.ravel())[0, 1])
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    )


# -- value ranges --------------------------------------------------------------------


def test_the_value_range_is_decided_by_the_dtype_not_the_values():
    np.testing.assert_allclose(to_unit_range(np.array([0, 51, 255], np.uint8)), [0, 0.2, 1])
    np.testing.assert_allclose(to_unit_range(np.array([0, 13107, 65535], np.uint16)), [0, 0.2, 1])
    with pytest.warns(UserWarning, match=r"int16 pixel values down to -7: negative values are read as 0"):
        np.testing.assert_allclose(to_unit_range(np.array([-7, 0, 32767], np.int16)), [0, 0, 1])
    # a dark 8-bit picture stays dark: its largest value does not become 1
    np.testing.assert_allclose(to_unit_range(np.array([0, 51], np.uint8)), [0, 0.2])
    # floats are [0, 1]: a pixel at 1.0000001 or a bicubic overshoot to 1.19 is clipped
    np.testing.assert_allclose(to_unit_range(np.array([0.5, 1.0000001, 1.19, -0.02])), [0.5, 1, 1, 0])
    assert to_unit_range(np.array([True, False])).tolist() == [1.0, 0.0]
    assert to_unit_range(np.zeros(3, np.float64)).dtype == np.float32
    with pytest.warns(UserWarning, match="divide by"):
        assert to_unit_range(np.array([0.0, 128.0, 255.0])).max() == 1
    with pytest.raises(ValueError, match="finite"):
        to_unit_range(np.array([0.5, np.nan]))
    with pytest.raises(ValueError, match="numbers"):
        to_unit_range(np.array(["a"]))


def test_one_pixel_above_1_or_a_bicubic_overshoot_does_not_rescale_the_picture(digit, reference):
    nudged = digit.copy()
    nudged[0, 0] = 1.0000001
    np.testing.assert_array_equal(prepare_image(nudged), reference)
    big = np.asarray(Image.fromarray(digit).resize((200, 200), Image.Resampling.BICUBIC))
    assert big.max() > 1.05  # the resize overshoots
    np.testing.assert_allclose(prepare_image(big), prepare_image(np.clip(big, 0, 1)), atol=1e-6)
    assert similarity(prepare_image(big), reference) > 0.8
    as_bytes = prepare_image((digit * 255).round().astype(np.uint8))
    assert similarity(as_bytes, reference) > 0.999


# -- layouts -------------------------------------------------------------------------


def test_guess_data_format():
    assert guess_data_format((28, 28, 1)) == "channels_last"
    assert guess_data_format((32, 32, 3)) == "channels_last"
    assert guess_data_format((64, 64, 2)) == "channels_last"
    assert guess_data_format((1, 28, 28)) == "channels_first"
    assert guess_data_format((4, 9, 9)) == "channels_first"
    assert guess_data_format((1, 1, 1)) == "channels_first"
    for ambiguous in [(3, 4, 3), (1, 8, 1), (16, 8, 8), (5, 5, 5)]:
        assert guess_data_format(ambiguous) is None


def test_every_array_layout_of_one_picture_gives_the_same_input(digit, reference):
    grey8 = (digit * 255).round().astype(np.uint8)
    rgb = np.repeat(digit[..., None], 3, axis=2)
    rgba = np.concatenate([rgb, np.ones_like(digit)[..., None]], axis=2)
    layouts = {
        "(H, W, 1)": digit[..., None],  # numpy's "matmul: Input operand 1 has a mismatch" before
        "(1, H, W)": digit[None],  # "it is blank" before
        "(3, H, W)": rgb.transpose(2, 0, 1),  # "it is blank" before
        "(H, W, 3)": rgb,
        "(H, W, 4)": rgba,
        "(4, H, W)": rgba.transpose(2, 0, 1),
        "(H, W, 2) grey + alpha": np.stack([digit, np.ones_like(digit)], axis=2),
        "uint8 (1, H, W)": grey8[None],
        "uint8 (H, W, 3)": np.repeat(grey8[..., None], 3, axis=2),
    }
    for name, array in layouts.items():
        assert similarity(prepare_image(array), reference) > 0.999, name
    with pytest.raises(ValueError, match="ambiguous"):
        prepare_image(np.zeros((3, 20, 3)))
    with pytest.raises(ValueError, match="2-D or 3-D"):
        prepare_image(np.zeros((1, 1, 20, 20)))


# -- ink on paper --------------------------------------------------------------------


def test_otsu_threshold_splits_two_groups():
    assert 0.12 < otsu_threshold([0.1, 0.12, 0.11, 0.8, 0.82, 0.79]) < 0.79
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.2, 0.03, 500), rng.normal(0.7, 0.03, 200)])
    assert 0.3 < otsu_threshold(values) < 0.6
    assert otsu_threshold(np.full(10, 0.4)) == 0.4


@pytest.mark.parametrize("direction", ["across", "down", "up", "diagonal"])
def test_unevenly_lit_paper_stays_paper(digit, reference, direction):
    # paper from 0.95 down to 0.75 across the sheet, ink at 0.08: the darker
    # side of the paper used to become ink (0 of 10 digits right)
    h, w = digit.shape
    ramp = {
        "across": np.linspace(0.95, 0.75, w)[None, :],
        "down": np.linspace(0.95, 0.75, h)[:, None],
        "up": np.linspace(0.75, 0.95, h)[:, None],
        "diagonal": (np.linspace(0.95, 0.85, h)[:, None] + np.linspace(0, -0.1, w)[None, :]),
    }[direction]
    photo = (digit * ramp + (1 - digit) * 0.08).astype(np.float32)
    assert similarity(prepare_image(photo), reference) > 0.97
    noisy = np.clip(photo + np.random.default_rng(1).normal(0, 0.03, photo.shape), 0, 1)
    assert similarity(prepare_image(noisy.astype(np.float32)), reference) > 0.9
    chalk = ramp * (0.1 + 0.8 * (1 - digit))  # light ink on dark, unevenly lit paper
    assert similarity(prepare_image(chalk.astype(np.float32)), reference) > 0.97


def test_blank_pictures_are_refused(digit):
    rng = np.random.default_rng(0)
    for blank in (np.ones((20, 20)), np.full((30, 40), 0.3), np.clip(0.8 + rng.normal(0, 0.05, (60, 60)), 0, 1)):
        with pytest.raises(ValueError, match="blank"):
            prepare_image(blank)
    transparent = np.zeros((30, 30, 4), np.uint8)
    with pytest.raises(ValueError, match="blank"):
        prepare_image(transparent)


def test_framings(digit):
    mnist = prepare_image(digit, (28, 28), framing="mnist")
    rows = np.flatnonzero(mnist.max(axis=1) > 0.05)
    assert rows.max() - rows.min() + 1 <= 21  # the 20-pixel box
    ys, xs = np.indices(mnist.shape)
    assert abs((ys * mnist).sum() / mnist.sum() - 13.5) <= 0.5  # centred by mass
    assert abs((xs * mnist).sum() / mnist.sum() - 13.5) <= 0.5
    fill = prepare_image(digit, (8, 8), framing="fill")  # the 3 is taller than wide
    assert fill.shape == (8, 8) and fill.dtype == np.float32 and fill.max() == 1
    assert fill[0].max() > 0.2 and fill[-1].max() > 0.2  # it fills the frame's height
    cols = np.flatnonzero(fill.max(axis=0) > 0.05)
    assert abs((cols.min() + cols.max()) / 2 - 3.5) <= 0.5  # centred
    colours = np.zeros((10, 14, 3), np.uint8)
    colours[..., 0] = 255  # red
    whole = prepare_image(colours, (5, 7), framing="whole", color="rgb")
    assert whole.shape == (3, 5, 7)
    np.testing.assert_allclose(whole[:, 2, 3], [1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(prepare_image(colours, (5, 7), framing="whole"), 0.299, atol=1e-3)
    with pytest.raises(ValueError, match="framing"):
        prepare_image(digit, framing="centre")
    with pytest.raises(ValueError, match="color"):
        prepare_image(digit, color="rgb")  # ink maps are grey


# -- files ---------------------------------------------------------------------------


def save(image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def mode_files(digit, folder):
    """The digit in every common file mode: {name: (path, expected grey values, tolerance)}."""
    grey8 = (digit * 255).round().astype(np.uint8)
    L = Image.fromarray(grey8)
    ink = 255 - grey8
    expected8 = grey8 / 255
    files = {
        "L": (save(L, folder / "l.png"), expected8, 1e-6),
        "1": (save(L.point(lambda v: 255 if v > 127 else 0).convert("1"), folder / "1.png"), grey8 > 127, 1e-6),
        "P": (save(L.convert("RGB").convert("P"), folder / "p.png"), expected8, 0.02),
        "RGB": (save(L.convert("RGB"), folder / "rgb.png"), expected8, 0.01),
        "JPEG": (save(L.convert("RGB"), folder / "rgb.jpg", quality=95), expected8, 0.1),
        "CMYK": (save(L.convert("CMYK"), folder / "cmyk.tif"), expected8, 0.01),
        # transparent paper, opaque black ink: on white it is the same drawing
        "LA": (save(Image.merge("LA", [Image.new("L", L.size, 0), Image.fromarray(ink)]), folder / "la.png"), expected8, 0.01),
        "RGBA": (save(Image.merge("RGBA", [Image.new("L", L.size, 0)] * 3 + [Image.fromarray(ink)]), folder / "rgba.png"), expected8, 0.01),
        # 16 bits: every level kept (Pillow's 8-bit grey conversion would clip)
        "I;16": (save(Image.fromarray((digit * 65535).round().astype(np.uint16)), folder / "i16.png"), digit, 1e-4),
        "I": (save(Image.fromarray((digit * 65535).round().astype(np.int32)), folder / "i32.tif"), digit, 1e-4),
        "F": (save(Image.fromarray(digit), folder / "f.tif"), digit, 1e-6),
    }
    palette = L.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)  # paper index transparent
    paper_index = palette.getpixel((0, 0))
    files["P+transparency"] = (save(palette, folder / "pt.png", transparency=paper_index), expected8, 0.1)
    return files


def test_every_file_mode_reads_at_its_own_depth(digit, reference, tmp_path):
    for mode, (path, expected, tolerance) in mode_files(digit, tmp_path).items():
        pixels = read_image(path)
        grey = pixels if pixels.ndim == 2 else pixels.mean(axis=2)
        assert grey.shape == digit.shape and grey.dtype == np.float32, mode
        assert np.abs(grey - expected).mean() <= tolerance, mode
        assert similarity(prepare_image(path), reference) > (0.95 if mode == "1" else 0.97), mode
    assert read_image(tmp_path / "l.png").ndim == 2 and read_image(tmp_path / "rgb.png").ndim == 3
    assert read_image(tmp_path / "l.png", color="rgb").shape == (*digit.shape, 3)
    assert read_image(tmp_path / "rgb.png", color="gray").ndim == 2


def test_sixteen_bit_grey_ink_on_grey_paper(digit, reference, tmp_path):
    # grey ink on grey paper above level 255 of 65535: Pillow's 8-bit grey is blank
    values = (36000 - 6000 * (1 - digit)).round().astype(np.uint16)
    path = save(Image.fromarray(values), tmp_path / "grey16.png")
    with Image.open(path) as im:
        assert im.mode == "I;16" and np.ptp(np.asarray(im.convert("L"))) == 0
    np.testing.assert_allclose(read_image(path), values / 65535, atol=1e-6)
    assert similarity(prepare_image(path), reference) > 0.99


def test_white_strokes_on_a_transparent_background(digit, reference, tmp_path):
    ink = ((1 - digit) * 255).round().astype(np.uint8)
    white = Image.merge("LA", [Image.new("L", (digit.shape[1], digit.shape[0]), 255), Image.fromarray(ink)])
    assert similarity(prepare_image(save(white, tmp_path / "white.png")), reference) > 0.99


# EXIF orientation n: how the stored pixels must be turned to show them upright.
# The stored image is the upright one turned the other way.
STORED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # upside down
    4: lambda a: a[::-1],  # mirrored top-bottom
    5: lambda a: a.T,  # mirrored along the top-left diagonal
    6: lambda a: np.rot90(a, 1),  # stored turned left: shown turned right (phones held upright)
    7: lambda a: np.rot90(a, 2).T,  # mirrored along the other diagonal
    8: lambda a: np.rot90(a, -1),  # stored turned right
}


@pytest.mark.parametrize("orientation", sorted(STORED))
@pytest.mark.parametrize("ext", ["jpg", "png"])
def test_exif_orientation_is_applied(digit, orientation, ext, tmp_path):
    upright = (digit[:, 10:] * 255).round().astype(np.uint8)  # not square: a wrong turn changes the shape
    stored = Image.fromarray(np.ascontiguousarray(STORED[orientation](upright))).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save(stored, tmp_path / f"o{orientation}.{ext}", exif=exif, quality=95)
    pixels = read_image(path, color="gray")
    assert pixels.shape == upright.shape
    assert np.abs(pixels - upright / 255).mean() < 0.02
