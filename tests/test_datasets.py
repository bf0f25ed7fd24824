import gzip
import hashlib
import json
import struct

import numpy as np
import pytest

from skcnn import datasets
from skcnn.datasets import DatasetUnavailableError, load_idx, load_idx_dataset, load_mnist
from skcnn.images import FRAMINGS, to_unit_range


def write_idx(path, array, compress=False):
    """Write an IDX file the way the MNIST files are laid out."""
    codes = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}
    code = codes[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_idx_round_trip(tmp_path, compress, dtype):
    data = (np.arange(2 * 3 * 4) * 7 % 256).astype(dtype).reshape(2, 3, 4)
    back = load_idx(write_idx(tmp_path / "x.idx", data, compress))
    np.testing.assert_array_equal(back, data)
    assert back.dtype == np.dtype(dtype)  # native byte order


def test_idx_rejects_bad_files(tmp_path):
    good = write_idx(tmp_path / "good", np.zeros((3, 2, 2), np.uint8)).read_bytes()
    cases = {
        "magic": b"\x01\x00" + good[2:],
        "element type": good[:2] + b"\x42" + good[3:],
        "truncated": good[:-1],
        "header": good[:6],
        "empty": b"",
    }
    for expected, content in cases.items():
        path = tmp_path / expected.replace(" ", "_")
        path.write_bytes(content)
        with pytest.raises(ValueError, match=expected.split()[0] if expected != "empty" else "magic"):
            load_idx(path)
    extra = tmp_path / "extra"
    extra.write_bytes(good + b"\x00")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_idx(extra)
    broken_gz = tmp_path / "broken.gz"
    broken_gz.write_bytes(gzip.compress(good)[:-8])
    with pytest.raises(ValueError, match="gzip"):
        load_idx(broken_gz)


def make_idx_folder(folder, n_train=12, n_test=5, compress=True):
    rng = np.random.default_rng(0)
    sfx = ".gz" if compress else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{sfx}", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{sfx}", (np.arange(n) % 10).astype(np.uint8), compress)
    return folder


def test_load_idx_dataset_shapes_scaling_and_labels(tmp_path):
    X_train, X_test, y_train, y_test = load_idx_dataset(make_idx_folder(tmp_path))
    assert X_train.shape == (12, 784) and X_test.shape == (5, 784)
    assert X_train.dtype == np.float32 and 0 <= X_train.min() and X_train.max() <= 1
    assert y_train.dtype == np.int64 and list(y_test) == [0, 1, 2, 3, 4]
    images = load_idx_dataset(tmp_path, shape="images")[0]
    assert images.shape == (12, 1, 28, 28)
    np.testing.assert_array_equal(images.reshape(12, -1), X_train)


def test_load_idx_dataset_names_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="train IDX files"):
        load_idx_dataset(tmp_path)


def test_fashion_mnist_prefers_local_idx_files(tmp_path):
    X_train, X_test, _, _ = datasets.load_fashion_mnist(local_dir=make_idx_folder(tmp_path, compress=False))
    assert len(X_train) == 12 and len(X_test) == 5


def build_openml_cache(data_home, data_id, n_rows):
    """A scikit-learn OpenML cache for a tiny MNIST-like data set, so that the
    real fetch_openml code path runs without a network."""
    root = data_home / "openml" / "openml.org"
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (n_rows, 784))
    labels = np.arange(n_rows) % 10
    lines = ["@RELATION mnist_784"]
    lines += [f"@ATTRIBUTE pixel{i + 1} NUMERIC" for i in range(784)]
    lines += ["@ATTRIBUTE class {0,1,2,3,4,5,6,7,8,9}", "@DATA"]
    lines += [",".join(map(str, row)) + f",{label}" for row, label in zip(pixels, labels)]
    arff = ("\n".join(lines) + "\n").encode()
    url = "https://api.openml.org/data/v1/download/999/mnist_784.arff"
    description = {
        "data_set_description": {
            "id": str(data_id), "name": "mnist_784", "version": "1", "format": "ARFF",
            "file_id": "999", "default_target_attribute": "class", "status": "active",
            "md5_checksum": hashlib.md5(arff).hexdigest(), "url": url,
            "description": "A tiny stand-in for MNIST written by the test.",
        }
    }  # fmt: skip
    feature = dict(data_type="numeric", is_target="false", is_ignore="false",
                   is_row_identifier="false", number_of_missing_values="0")  # fmt: skip
    features = [dict(feature, index=str(i), name=f"pixel{i + 1}") for i in range(784)]
    features.append(dict(feature, index="784", name="class", data_type="nominal",
                         nominal_value=[str(d) for d in range(10)], is_target="true"))  # fmt: skip
    files = {
        f"api/v1/json/data/{data_id}": json.dumps(description).encode(),
        f"api/v1/json/data/features/{data_id}": json.dumps({"data_features": {"feature": features}}).encode(),
        f"api/v1/json/data/qualities/{data_id}": json.dumps(
            {"data_qualities": {"quality": [{"name": "NumberOfInstances", "value": f"{n_rows}.0"}]}}
        ).encode(),
        "data/v1/download/999/mnist_784.arff": arff,
    }
    for rel, content in files.items():
        path = root / (rel + ".gz")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(content))
    return pixels, labels


def test_load_mnist_through_fetch_openml_from_a_local_cache(tmp_path):
    pixels, labels = build_openml_cache(tmp_path, datasets.OPENML_IDS["mnist"], n_rows=14)
    X_train, X_test, y_train, y_test = load_mnist(data_home=tmp_path)
    assert X_train.shape == (12, 784) and X_test.shape == (2, 784)  # the 6/7 : 1/7 split
    assert X_train.dtype == np.float32
    np.testing.assert_allclose(X_train, pixels[:12] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(np.concatenate([y_train, y_test]), labels)
    images = load_mnist(data_home=tmp_path, shape="images")[1]
    assert images.shape == (2, 1, 28, 28)


def test_load_mnist_without_network_or_cache_says_how_to_fix_it(offline, tmp_path):
    with pytest.raises(DatasetUnavailableError) as info:
        load_mnist(data_home=tmp_path)
    message = str(info.value)
    assert "data_home" in message and "load_idx" in message and "internet" in message


def test_load_digits_images():
    X_train, X_test, y_train, y_test = datasets.load_digits_images()
    assert X_train.shape[1:] == (1, 8, 8) and X_train.dtype == np.float32
    assert X_train.max() <= 1 and len(X_train) + len(X_test) == 1797
    assert datasets.load_digits_images(shape="flat")[0].shape[1] == 64


def test_registry_entries_name_their_classes_and_geometry():
    for name, entry in datasets.DATASETS.items():
        assert len(entry.class_names) == 10 and len(set(entry.class_names)) == 10, name
        assert all(isinstance(c, str) and c for c in entry.class_names), name
        assert len(entry.image_shape) == 3 and entry.default_epochs >= 1, name
        assert entry.framing in FRAMINGS, name
    fashion = datasets.DATASETS["fashion-mnist"].class_names
    assert fashion[0] == "T-shirt/top" and fashion[9] == "Ankle boot"
    assert datasets.DATASETS["mnist"].class_names[7] == "7"
    # how their images were made: MNIST's digits in a 20x20 box, the others filling the frame
    assert [datasets.DATASETS[n].framing for n in ("mnist", "fashion-mnist", "digits")] == ["mnist", "fill", "fill"]


def test_registry_loaders_return_images_of_the_recorded_geometry(tmp_path):
    digits = datasets.DATASETS["digits"]
    X_train, X_test, y_train, _ = digits.load(None, "images")
    assert X_train.shape[1:] == X_test.shape[1:] == digits.image_shape
    assert set(np.unique(y_train)) == set(range(len(digits.class_names)))
    pixels, _ = build_openml_cache(tmp_path, datasets.OPENML_IDS["mnist"], n_rows=14)
    mnist = datasets.DATASETS["mnist"]
    assert mnist.load(tmp_path, "images")[0].shape[1:] == mnist.image_shape


def write_idx_dataset(folder, images, labels):
    """The four IDX files of a data set whose train and test images are ``images``."""
    for prefix in ("train", "t10k"):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
    return folder


@pytest.mark.parametrize(
    "dtype,top",
    [(np.uint8, 255), (np.int8, 127), (np.int16, 32767), (np.int32, 2**31 - 1)],
)
def test_idx_images_of_every_integer_type_come_out_in_0_1(tmp_path, dtype, top):
    # int16 images came out in [1.04, 126.3] (divided by 255 whatever the type)
    rng = np.random.default_rng(0)
    raw = rng.integers(top // 100, top, (4, 28, 28), endpoint=True).astype(dtype)
    raw[0, 0, 0] = 0
    X_train, _, _, _ = load_idx_dataset(write_idx_dataset(tmp_path, raw, np.arange(4, dtype=np.uint8)))
    assert X_train.dtype == np.float32 and X_train.min() == 0 and X_train.max() <= 1
    np.testing.assert_allclose(X_train, raw.reshape(4, -1) / top, rtol=1e-6)
    assert X_train.max() > 0.9


@pytest.mark.parametrize("signed,unsigned", [(np.int8, np.uint8), (np.int16, np.uint16)])
def test_idx_pixels_wrapped_to_negative_in_a_signed_type_are_not_zeroed_silently(tmp_path, signed, unsigned):
    # 0-255 written as int8: bright pixels wrap to -128..-1 and were read as black without a word
    pixels = np.random.default_rng(0).integers(0, np.iinfo(unsigned).max, (4, 6, 6), endpoint=True).astype(unsigned)
    folder = write_idx_dataset(tmp_path, pixels.view(signed), np.arange(4, dtype=np.uint8))
    with pytest.warns(UserWarning, match=rf"images-idx3-ubyte.*negative values are read as 0.*every pixel is misread.*pixels\.view\(np\.{np.dtype(unsigned).name}\)"):
        X_train, _, _, _ = load_idx_dataset(folder)
    wrapped = pixels > np.iinfo(signed).max
    assert wrapped.any() and (X_train.reshape(pixels.shape)[wrapped] == 0).all()  # what the warning says
    # read as the warning (and load_idx_dataset's docstring) advises, the pixels come back
    raw = load_idx(next(folder.glob("train-images*")))
    assert raw.dtype == signed
    np.testing.assert_allclose(to_unit_range(raw.view(unsigned)), pixels / np.iinfo(unsigned).max, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_idx_float_images_already_in_0_1_are_kept(tmp_path, dtype):
    # they came out in [0, 0.0039] (divided by 255 again)
    raw = np.random.default_rng(0).random((4, 28, 28)).astype(dtype)
    X_train, _, _, _ = load_idx_dataset(write_idx_dataset(tmp_path, raw, np.arange(4, dtype=np.uint8)))
    np.testing.assert_allclose(X_train, raw.reshape(4, -1), rtol=1e-6)
    with pytest.warns(UserWarning, match="clipped"):  # 0-255 held as floats: said, not silently squashed
        load_idx_dataset(write_idx_dataset(tmp_path, raw * 255, np.arange(4, dtype=np.uint8)))


# -- load_image_folder -----------------------------------------------------------


def picture_folder(root):
    """Two classes of pictures in mixed sizes, modes and formats, plus things
    that are no pictures."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "disc").mkdir(parents=True)
    (root / "bar").mkdir()
    made = {}
    for i in range(6):
        for name in ("disc", "bar"):
            yy, xx = np.mgrid[:24, :20]
            shape = ((yy - 12) ** 2 + (xx - 10) ** 2 < 36) if name == "disc" else (abs(xx - 10) < 3)
            value = np.where(shape, 40, 220) + rng.integers(0, 10, (24, 20))
            im = Image.fromarray(value.astype(np.uint8))
            kind = ["L.png", "RGB.jpg", "P.gif", "LA.png", "RGBA.png", "I16.png"][i]
            path = root / name / f"{i}_{kind}"
            if kind == "I16.png":
                im = Image.fromarray((value * 257).astype(np.uint16))
            elif kind != "L.png":
                im = im.convert(kind.split(".")[0].replace("I16", "L"))
            if i == 2:
                im = im.resize((30, 36))  # another size
            im.save(path)
            made[str(path)] = None if i == 2 else value / 255
    (root / "bar" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "bar" / "notes.txt").write_text("not a picture")
    (root / "bar" / ".DS_Store").write_bytes(b"hidden")
    (root / "readme.md").write_text("outside every class")
    (root / "empty").mkdir()
    return made


@pytest.mark.filterwarnings("ignore:.*(skipped|outside|no readable):UserWarning")  # checked once below
def test_load_image_folder_reads_mixed_pictures_into_one_shape(tmp_path):
    made = picture_folder(tmp_path)
    with pytest.warns(UserWarning) as record:
        bunch = datasets.load_image_folder(tmp_path)
    messages = " | ".join(str(w.message) for w in record)
    assert "broken.png" in messages and "notes.txt" in messages  # named, never silent
    assert "readme.md" in messages and "empty" in messages and ".DS_Store" not in messages
    assert bunch.data.shape == (12, 1, 24, 20)  # the most common size; every picture is grey
    assert bunch.data.dtype == np.float32 and 0 <= bunch.data.min() and bunch.data.max() <= 1
    assert bunch.target_names == ["bar", "disc"]
    assert bunch.target.dtype == np.int64 and np.bincount(bunch.target).tolist() == [6, 6]
    assert len(bunch.filenames) == 12 and bunch.framing == "whole"
    for image, name in zip(bunch.data, bunch.filenames):
        expected = made[name]
        if expected is not None:  # not resized: the values as written, 16 bits too
            assert np.abs(image[0] - expected).mean() < (0.04 if name.endswith("jpg") else 0.005), name
    X, y = datasets.load_image_folder(tmp_path, size=(12, 10), color="rgb", return_X_y=True)
    assert X.shape == (12, 3, 12, 10) and y.tolist() == bunch.target.tolist()
    assert datasets.load_image_folder(tmp_path, size=16, color="gray").data.shape == (12, 1, 16, 16)


def test_load_image_folder_keeps_colour_and_turns_phone_photos_upright(tmp_path):
    from PIL import Image

    (tmp_path / "red").mkdir()
    (tmp_path / "blue").mkdir()
    Image.new("RGB", (8, 6), (255, 0, 0)).save(tmp_path / "red" / "a.png")
    Image.new("RGB", (8, 6), (0, 0, 255)).save(tmp_path / "blue" / "b.png")
    upright = np.zeros((6, 8, 3), np.uint8)
    upright[:2] = (0, 0, 255)  # a blue band at the top
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned left, shown turned right
    Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1))).save(tmp_path / "blue" / "turned.png", exif=exif)
    bunch = datasets.load_image_folder(tmp_path)
    assert bunch.data.shape == (3, 3, 6, 8)
    np.testing.assert_allclose(bunch.data[bunch.target_names.index("red") == bunch.target][0][:, 0, 0], [1, 0, 0])
    turned = bunch.data[list(bunch.filenames).index(str(tmp_path / "blue" / "turned.png"))]
    np.testing.assert_allclose(turned[2, :2], 1)  # the band is at the top again
    np.testing.assert_allclose(turned[2, 2:], 0)


def test_load_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        datasets.load_image_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no subfolders"):
        datasets.load_image_folder(tmp_path)
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "x.jpg").write_bytes(b"garbage")
    with pytest.warns(UserWarning) as record, pytest.raises(ValueError, match="no readable picture"):
        datasets.load_image_folder(tmp_path)
    assert "x.jpg" in str(record[0].message) and "cats" in str(record[1].message)
    with pytest.raises(ValueError, match="color"):
        datasets.load_image_folder(tmp_path, color="sepia")
    with pytest.raises(ValueError, match="size"):
        datasets.load_image_folder(tmp_path, size=(0, 4))
