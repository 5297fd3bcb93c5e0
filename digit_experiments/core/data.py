"""MNIST: read the IDX files (verified), split off validation, take class-balanced slices.

Everything here is NumPy: no TensorFlow, so it is quick to test and to reuse.
Images come out as float32 in [0, 1] with shape (N, H, W, 1) (MNIST: 28 x 28); labels
as uint8 digits. Arrays from any source are checked before a run starts: a file whose
labels are not digits, whose images are not one size or whose pixel values break the
rule of core.images is refused, naming the file and the problem.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from digit_experiments.core.config import DataConfig
from digit_experiments.core.images import check_pixels, to_unit_range
from digit_experiments.errors import DataError, ImageError

# Every source here holds handwritten digits: labels are 0-9.
DIGITS = 10
# Where data.source=keras downloads MNIST from (keras.datasets.mnist).
KERAS_MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"

# sha256 of the *uncompressed* IDX content, as published with the data set
# (see digit_experiments/resources/mnist/README.md). Checking the content rather than
# the .gz means a re-compressed copy of the same data is still accepted.
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
# IDX magic numbers: 0x00000801 = unsigned bytes, 1 dimension; 0x00000803 = 3 dimensions.
MAGIC_LABELS, MAGIC_IMAGES = 2049, 2051


@dataclass
class Splits:
    """The arrays a run trains, validates and tests on, and where they came from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str  # a path or URI, shown as the dataset's source in MLflow
    num_classes: int = DIGITS
    # What the run names its datasets (<name>-train, ...): mnist, or the folder's name.
    name: str = "mnist"
    # source=folder: the folder's digest, file and per-digit counts (core.folder).
    details: dict = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(H, W, C) of one image: what a model built for this data takes."""
        return tuple(self.x_train.shape[1:])


def bundled_dir() -> Path:
    """The folder of MNIST files shipped inside the package."""
    return Path(str(resources.files("digit_experiments") / "resources" / "mnist"))


# --- reading --------------------------------------------------------------------------


def read_idx(path: Path, expected_sha256: str | None = None) -> np.ndarray:
    """Read one IDX file (gzip or raw) into a uint8 array, checking what can be checked."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: not a readable gzip file ({e}); is it truncated?") from e
    if expected_sha256 is not None:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != expected_sha256:
            raise DataError(
                f"{path}: content checksum mismatch (sha256 {digest[:16]}..., expected "
                f"{expected_sha256[:16]}...): the file is altered or not MNIST "
                "(set data.verify_checksums=false for other data in IDX format)"
            )
    return _parse_idx(raw, path)


def _parse_idx(raw: bytes, path: Path) -> np.ndarray:
    if len(raw) < 8:
        raise DataError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    magic = int.from_bytes(raw[0:4], "big")
    if magic not in (MAGIC_LABELS, MAGIC_IMAGES):
        raise DataError(f"{path}: bad IDX magic number {magic:#010x} (expected 0x00000801/3)")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: IDX header is truncated")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = int(np.prod(dims)) + header
    if len(raw) != expected:
        raise DataError(
            f"{path}: size {len(raw)} bytes does not match its header {dims} "
            f"({expected} bytes): truncated or padded"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    raise DataError(f"{directory / (stem + '.gz')}: data file not found")


def load_idx_dir(directory: Path, verify: bool = True) -> dict[str, np.ndarray]:
    """The four MNIST arrays from a folder of IDX files (checked), as uint8."""
    return check_arrays(*_load_idx_dir(Path(directory), verify))


def _load_idx_dir(directory: Path, verify: bool) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The four arrays and, for each, the file it came from (for error messages)."""
    if not directory.is_dir():
        raise DataError(f"{directory}: data directory not found")
    arrays, names = {}, {}
    for key, stem in FILES.items():
        path = _find(directory, stem)
        arrays[key] = read_idx(path, SHA256[stem] if verify else None)
        names[key] = str(path)
    return arrays, names


NPZ_KEYS = {
    "train_images": "x_train",
    "train_labels": "y_train",
    "test_images": "x_test",
    "test_labels": "y_test",
}


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """The four arrays from an .npz with keys x_train, y_train, x_test, y_test."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in NPZ_KEYS.values() if k not in npz.files]
            if missing:
                raise DataError(f"{path}: missing arrays {missing} (has {npz.files})")
            return {ours: npz[theirs] for ours, theirs in NPZ_KEYS.items()}
    except (OSError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: not a readable .npz file ({e})") from e


def load_arrays(cfg: DataConfig) -> tuple[dict[str, np.ndarray], str, dict[str, str]]:
    """Raw arrays (images, integer labels), a description of their source, and for each
    array the file (and array) it came from, to name in an error."""
    if cfg.source == "bundled":
        directory = bundled_dir()
        arrays, names = _load_idx_dir(directory, verify=True)
        return arrays, str(directory), names
    if cfg.source == "keras":
        import keras  # only this source needs it: it downloads into ~/.keras/datasets

        (xt, yt), (xs, ys) = keras.datasets.mnist.load_data()
        arrays = {"train_images": xt, "train_labels": yt, "test_images": xs, "test_labels": ys}
        names = dict.fromkeys(arrays, "keras.datasets.mnist")
        return arrays, KERAS_MNIST_URL, names
    if cfg.path is None:
        raise DataError("data.path must be set when data.source=path")
    path = Path(cfg.path).expanduser()
    if path.suffix == ".npz":
        names = {ours: f"{path} ({theirs})" for ours, theirs in NPZ_KEYS.items()}
        return load_npz(path), str(path.resolve()), names
    arrays, names = _load_idx_dir(path, verify=cfg.verify_checksums)
    return arrays, str(path.resolve()), names


def check_arrays(arrays: dict[str, np.ndarray], names: dict[str, str]) -> dict[str, np.ndarray]:
    """The four arrays checked and put in shape: images (N, H, W) of one size whose pixel
    values follow core.images' rule (converted later, slice by slice), labels uint8
    digits 0-9. Raises DataError naming the file (and array) and what is wrong."""
    checked = {}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        image_file, label_file = names[f"{split}_images"], names[f"{split}_labels"]
        if images.ndim == 4 and images.shape[-1] == 1:
            images = images[..., 0]
        if images.ndim != 3 or 0 in images.shape:
            raise DataError(
                f"{image_file}: images must be N x H x W (2-D images of one size, one "
                f"channel), got shape {images.shape}"
            )
        labels = np.asarray(labels)
        if labels.ndim != 1:
            raise DataError(
                f"{label_file}: labels must be one number per image, got shape {labels.shape}"
            )
        if len(images) != len(labels):
            raise DataError(f"{label_file}: {len(labels)} labels for {len(images)} images")
        checked[f"{split}_labels"] = _digit_labels(labels, label_file)
        try:
            check_pixels(images)
        except ImageError as e:
            raise DataError(f"{image_file}: {e}") from None
        checked[f"{split}_images"] = images
    train_hw, test_hw = checked["train_images"].shape[1:], checked["test_images"].shape[1:]
    if train_hw != test_hw:
        raise DataError(
            f"{names['test_images']}: test images are {test_hw[0]}x{test_hw[1]} but the "
            f"training images ({names['train_images']}) are {train_hw[0]}x{train_hw[1]}"
        )
    return checked


def _digit_labels(labels: np.ndarray, file: str) -> np.ndarray:
    """Labels as uint8, refusing anything that is not a digit 0-9."""
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise DataError(f"{file}: labels must be integers 0-9, got dtype {labels.dtype}")
    if np.issubdtype(labels.dtype, np.floating):
        whole = np.isfinite(labels) & (labels == np.round(labels))
        if not whole.all():
            index = int(np.flatnonzero(~whole)[0])
            raise DataError(
                f"{file}: labels must be integers 0-9, found {labels[index]} at index {index}"
            )
    outside = (labels < 0) | (labels >= DIGITS)
    if outside.any():
        index = int(np.flatnonzero(outside)[0])
        raise DataError(
            f"{file}: labels must be digits 0-{DIGITS - 1}, found {labels[index]:g} at index "
            f"{index} ({int(outside.sum())} such labels)"
        )
    return labels.astype(np.uint8)


# --- preparing ------------------------------------------------------------------------


def balanced_indices(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Indices of a deterministic slice with (nearly) the same count of every class.

    Classes that run short give their share to the others, so `limit` is honoured
    whenever there are that many samples. The result is sorted (original order kept).
    """
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    pools = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    take = dict.fromkeys(classes, 0)
    remaining = limit
    while remaining > 0:
        open_classes = [c for c in classes if take[c] < len(pools[c])]
        share, extra = divmod(remaining, len(open_classes))
        for i, c in enumerate(open_classes):
            add = min(share + (1 if i < extra else 0), len(pools[c]) - take[c])
            take[c] += add
            remaining -= add
    return np.sort(np.concatenate([pools[c][: take[c]] for c in classes]))


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx): `fraction` of every class held out, deterministic in seed."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    # Largest-remainder rounding: each class gets its share, and the total is exactly
    # round(N * fraction) (6,000 of 60,000 for the default 0.1).
    quota = counts * fraction
    n_val = np.floor(quota).astype(int)
    short = round(len(labels) * fraction) - n_val.sum()
    n_val[np.argsort(n_val - quota, kind="stable")[:short]] += 1
    train_idx, val_idx = [], []
    for c, n in zip(classes, n_val):
        idx = rng.permutation(np.flatnonzero(labels == c))
        val_idx.append(idx[:n])
        train_idx.append(idx[n:])
    # Shuffle the training order once so batches mix classes even without fit's shuffle.
    return rng.permutation(np.concatenate(train_idx)), np.sort(np.concatenate(val_idx))


def to_model_input(images: np.ndarray) -> np.ndarray:
    """Images (N, H, W) -> float32 (N, H, W, 1) in [0, 1], the models' input format."""
    return to_unit_range(images)[..., np.newaxis]


def per_class_indices(labels: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """Indices of at most `per_class` images of every class (all of a class that has
    fewer), seeded; sorted. None: every index."""
    if per_class is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(chosen))


def load(cfg: DataConfig, seed: int) -> Splits:
    """The train/validation/test arrays a run uses, from the configured source.
    Bad data is refused here (DataError), before anything else of a run happens."""
    if cfg.source == "folder":
        return _load_folder(cfg, seed)
    arrays, source, names = load_arrays(cfg)
    arrays = check_arrays(arrays, names)
    return make_splits(
        arrays["train_images"],
        arrays["train_labels"],
        arrays["test_images"],
        arrays["test_labels"],
        cfg,
        seed,
        source,
    )


def make_splits(x_all, y_all, x_test, y_test, cfg: DataConfig, seed: int, source: str, **kw):
    """Splits from checked arrays: data.per_class and data.train_limit narrow the
    training images, a stratified seeded split holds validation out of them (unless
    `val=(x, y)` is given), data.test_limit slices the test images. `kw`: Splits' own."""
    val = kw.pop("val", None)
    pool = per_class_indices(y_all, cfg.per_class, seed)
    pool = pool[balanced_indices(y_all[pool], cfg.train_limit, seed)]
    if val is None:
        train_idx, val_idx = stratified_split(y_all[pool], cfg.val_fraction, seed)
        x_val, y_val = x_all[pool][val_idx], y_all[pool][val_idx]
        if len(y_val) == 0:
            raise DataError(
                f"{source}: data.val_fraction={cfg.val_fraction} of {len(pool)} training "
                "images leaves none for validation; give more images (data.per_class, "
                "data.train_limit) or a larger data.val_fraction"
            )
    else:
        train_idx = np.random.default_rng(seed).permutation(len(pool))
        x_val, y_val = val
    test_idx = balanced_indices(y_test, cfg.test_limit, seed)
    return Splits(
        x_train=to_model_input(x_all[pool][train_idx]),
        y_train=y_all[pool][train_idx],
        x_val=to_model_input(x_val),
        y_val=y_val,
        x_test=to_model_input(x_test[test_idx]),
        y_test=y_test[test_idx],
        source=source,
        **kw,
    )


def _load_folder(cfg: DataConfig, seed: int) -> Splits:
    """data.source=folder (core.folder): the run's Splits, with the folder's digest and
    file and per-digit counts in `details`."""
    from digit_experiments.core.folder import read_folder

    if cfg.path is None:
        raise DataError("data.path must be set when data.source=folder")
    found = read_folder(Path(cfg.path), cfg.allow_missing_classes)
    val = (found.images["val"], found.labels["val"]) if "val" in found.images else None
    return make_splits(
        found.images["train"],
        found.labels["train"],
        found.images["test"],
        found.labels["test"],
        cfg,
        seed,
        str(found.root),
        val=val,
        name=found.root.name or "folder",
        details={
            "digest": found.digest,
            "files": found.files,
            "pictures_per_digit": {split: found.counts(split) for split in found.labels},
            "val": "folder" if val is not None else f"split from train ({cfg.val_fraction})",
        },
    )
