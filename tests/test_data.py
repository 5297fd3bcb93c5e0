"""Data: the bundled MNIST is the real one, damaged files are refused, slices are fair."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest

from digit_experiments.core import data
from digit_experiments.core.config import DataConfig

# From shared/data/mnist/README.md.
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def bundled():
    return data.load_idx_dir(data.bundled_dir())


def test_bundled_files_are_the_real_mnist(bundled):
    assert bundled["train_images"].shape == (60000, 28, 28)
    assert bundled["test_images"].shape == (10000, 28, 28)
    assert np.bincount(bundled["train_labels"]).tolist() == TRAIN_COUNTS
    assert np.bincount(bundled["test_labels"]).tolist() == TEST_COUNTS
    assert bundled["train_images"].mean() == pytest.approx(33.318, abs=1e-3)
    assert bundled["train_images"].std() == pytest.approx(78.567, abs=1e-3)


def test_load_splits_validation_from_training_only(bundled):
    splits = data.load(DataConfig(), seed=0)
    assert splits.sizes() == {"train": 54000, "val": 6000, "test": 10000}
    assert splits.x_train.dtype == np.float32 and splits.x_train.shape[1:] == (28, 28, 1)
    assert 0.0 <= splits.x_train.min() and splits.x_train.max() <= 1.0
    # The test set is untouched and in its original order.
    np.testing.assert_array_equal(splits.y_test, bundled["test_labels"])
    # Every class keeps its share in validation (stratified).
    val_share = np.bincount(splits.y_val) / np.array(TRAIN_COUNTS)
    assert np.allclose(val_share, 0.1, atol=0.001)


def test_split_is_deterministic_in_the_seed_and_disjoint():
    labels = np.repeat(np.arange(10), 50)
    a_train, a_val = data.stratified_split(labels, 0.2, seed=1)
    b_train, b_val = data.stratified_split(labels, 0.2, seed=1)
    c_train, _ = data.stratified_split(labels, 0.2, seed=2)
    np.testing.assert_array_equal(a_train, b_train)
    np.testing.assert_array_equal(a_val, b_val)
    assert not np.array_equal(a_train, c_train)
    assert set(a_train).isdisjoint(a_val) and len(a_train) + len(a_val) == 500
    assert np.bincount(labels[a_val]).tolist() == [10] * 10


def test_limits_take_a_class_balanced_deterministic_slice():
    cfg = DataConfig(train_limit=2000, test_limit=500)
    a, b = data.load(cfg, seed=3), data.load(cfg, seed=3)
    assert a.sizes() == {"train": 1800, "val": 200, "test": 500}
    assert np.bincount(a.y_test).tolist() == [50] * 10
    assert np.bincount(np.concatenate([a.y_train, a.y_val])).tolist() == [200] * 10
    np.testing.assert_array_equal(a.x_train, b.x_train)


def test_balanced_indices_hands_on_the_share_of_short_classes():
    labels = np.array([0] * 3 + [1] * 100)
    idx = data.balanced_indices(labels, 20, seed=0)
    assert len(idx) == 20 and np.bincount(labels[idx]).tolist() == [3, 17]


def _copy_bundled(tmp_path):
    target = tmp_path / "mnist"
    shutil.copytree(data.bundled_dir(), target)
    return target


def _rewrite(path, transform):
    raw = bytearray(gzip.decompress(path.read_bytes()))
    path.write_bytes(gzip.compress(bytes(transform(raw))))


def test_a_missing_file_is_refused_by_name(tmp_path):
    directory = _copy_bundled(tmp_path)
    (directory / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(data.DataError, match="t10k-labels-idx1-ubyte.gz: data file not found"):
        data.load_idx_dir(directory)


def test_a_truncated_file_is_refused_by_name(tmp_path):
    directory = _copy_bundled(tmp_path)
    path = directory / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(data.DataError, match="train-labels-idx1-ubyte.gz: .*truncated"):
        data.load_idx_dir(directory)


def test_an_altered_file_is_refused_by_its_checksum(tmp_path):
    directory = _copy_bundled(tmp_path)
    path = directory / "t10k-images-idx3-ubyte.gz"

    def flip(raw):
        raw[5000] ^= 0xFF
        return raw

    _rewrite(path, flip)
    with pytest.raises(data.DataError, match="t10k-images-idx3-ubyte.gz: content checksum"):
        data.load_idx_dir(directory)


def test_a_recompressed_copy_of_the_same_content_is_accepted(tmp_path):
    directory = _copy_bundled(tmp_path)
    _rewrite(directory / "t10k-labels-idx1-ubyte.gz", lambda raw: raw)
    assert len(data.load_idx_dir(directory)["test_labels"]) == 10000


def test_structure_is_checked_even_without_checksums(tmp_path):
    directory = _copy_bundled(tmp_path)
    images = directory / "t10k-images-idx3-ubyte.gz"

    def bad_magic(raw):
        raw[3] = 0x07
        return raw

    _rewrite(images, bad_magic)
    with pytest.raises(data.DataError, match="t10k-images-idx3-ubyte.gz: bad IDX magic"):
        data.load_idx_dir(directory, verify=False)


def test_image_and_label_counts_must_agree(tmp_path):
    directory = _copy_bundled(tmp_path)

    def drop_last_label(raw):
        raw[4:8] = (9999).to_bytes(4, "big")
        return raw[:-1]

    _rewrite(directory / "t10k-labels-idx1-ubyte.gz", drop_last_label)
    with pytest.raises(data.DataError, match="t10k-labels-idx1-ubyte.gz: 9999 labels for 10000"):
        data.load_idx_dir(directory, verify=False)


def test_source_path_reads_a_directory_or_an_npz(tmp_path, bundled):
    directory = _copy_bundled(tmp_path)
    from_dir = data.load(DataConfig(source="path", path=str(directory), test_limit=100), 0)
    assert from_dir.sizes()["test"] == 100

    npz = tmp_path / "digits.npz"
    np.savez(
        npz,
        x_train=bundled["train_images"][:300],
        y_train=bundled["train_labels"][:300],
        x_test=bundled["test_images"][:50],
        y_test=bundled["test_labels"][:50],
    )
    from_npz = data.load(DataConfig(source="path", path=str(npz)), 0)
    assert from_npz.sizes() == {"train": 270, "val": 30, "test": 50}


@pytest.mark.parametrize("name", ["nowhere", "nowhere.npz"])
def test_a_path_that_does_not_exist_is_refused_by_name(tmp_path, name):
    with pytest.raises(data.DataError, match=f"{name}: data (directory|file) not found"):
        data.load(DataConfig(source="path", path=str(tmp_path / name)), 0)


def test_source_path_needs_a_path():
    with pytest.raises(data.DataError, match="data.path must be set"):
        data.load(DataConfig(source="path"), 0)


# --- bad data from data.source=path: refused with the file and the problem named --------


def _npz(tmp_path, bundled, **changes):
    arrays = {
        "x_train": bundled["train_images"][:300],
        "y_train": bundled["train_labels"][:300],
        "x_test": bundled["test_images"][:50],
        "y_test": bundled["test_labels"][:50],
    }
    arrays.update(changes)
    path = tmp_path / "digits.npz"
    np.savez(path, **arrays)
    return path


def _bad_float(bundled):
    images = bundled["train_images"][:300].astype(np.float32) / 255.0
    images[7, 3, 3] = np.nan
    return images


BAD_NPZ = [
    (
        "labels outside 0-9",
        lambda b: {"y_train": np.where(np.arange(300) == 12, 10, b["train_labels"][:300])},
        r"\(y_train\): labels must be digits 0-9, found 10 at index 12",
    ),
    (
        "negative labels",
        lambda b: {"y_test": np.full(50, -1)},
        r"\(y_test\): labels must be digits 0-9, found -1 at index 0",
    ),
    (
        "labels that are not whole numbers",
        lambda b: {"y_train": b["train_labels"][:300] + 0.5},
        r"\(y_train\): labels must be integers 0-9, found 5.5 at index 0",
    ),
    (
        "flat images",
        lambda b: {"x_train": b["train_images"][:300].reshape(300, 784)},
        r"\(x_train\): images must be N x H x W .*got shape \(300, 784\)",
    ),
    (
        "test images of another size",
        lambda b: {"x_test": np.zeros((50, 32, 32), np.uint8)},
        r"\(x_test\): test images are 32x32 but the training images .* are 28x28",
    ),
    (
        "float images in 0-255",
        lambda b: {"x_train": b["train_images"][:300].astype(np.float32)},
        r"\(x_train\): float pixel values must be in \[0, 1\], found 0 to 255",
    ),
    (
        "NaN",
        _bad_float,
        r"\(x_train\): pixel values contain NaN",
    ),
    (
        "floats divided by 255 twice",
        lambda b: {"x_test": b["test_images"][:50].astype(np.float32) / 255.0 / 255.0},
        r"\(x_test\): float pixel values are all at most 0.003922: divided by 255 twice",
    ),
    (
        "integers beyond a byte",
        lambda b: {"x_train": b["train_images"][:300].astype(np.int32) * 4},
        r"\(x_train\): integer pixel values must be 0-255, found 0 to 1020",
    ),
]


@pytest.mark.parametrize(("case", "change", "message"), BAD_NPZ, ids=[c[0] for c in BAD_NPZ])
def test_bad_arrays_are_refused_naming_the_file_and_the_problem(
    tmp_path, bundled, case, change, message
):
    changes = change(bundled)
    if isinstance(changes, np.ndarray):
        changes = {"x_train": changes}
    path = _npz(tmp_path, bundled, **changes)
    with pytest.raises(data.DataError, match=str(path).replace(".", r"\.") + " " + message):
        data.load(DataConfig(source="path", path=str(path)), 0)


def test_float_images_in_0_1_are_used_as_they_are(tmp_path, bundled):
    as_bytes = data.load(DataConfig(source="path", path=str(_npz(tmp_path, bundled))), 0)
    floats = {
        "x_train": bundled["train_images"][:300].astype(np.float64) / 255.0,
        "x_test": bundled["test_images"][:50].astype(np.float32) / 255.0,
    }
    as_floats = data.load(DataConfig(source="path", path=str(_npz(tmp_path, bundled, **floats))), 0)
    np.testing.assert_allclose(as_floats.x_train, as_bytes.x_train, atol=1e-6)
    np.testing.assert_allclose(as_floats.x_test, as_bytes.x_test, atol=1e-6)
    assert as_floats.x_train.max() == pytest.approx(1.0)  # not divided by 255 again


def test_an_idx_label_file_with_a_label_that_is_not_a_digit_is_refused(tmp_path):
    directory = _copy_bundled(tmp_path)

    def label_ten(raw):
        raw[8 + 42] = 10
        return raw

    _rewrite(directory / "t10k-labels-idx1-ubyte.gz", label_ten)
    with pytest.raises(
        data.DataError, match="t10k-labels-idx1-ubyte.gz: labels must be digits 0-9, found 10 at"
    ):
        data.load(DataConfig(source="path", path=str(directory), verify_checksums=False), 0)


def test_the_shape_and_classes_come_from_the_data(tmp_path, bundled):
    small = {
        "x_train": bundled["train_images"][:300, ::2, ::2],
        "x_test": bundled["test_images"][:50, ::2, ::2],
    }
    splits = data.load(DataConfig(source="path", path=str(_npz(tmp_path, bundled, **small))), 0)
    assert splits.image_shape == (14, 14, 1) and splits.num_classes == 10
