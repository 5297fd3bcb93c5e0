"""A folder of digit pictures as a data source (`data.source=folder data.path=DIR`).

    DIR/train/<digit>/*      pictures of that digit (PNG, JPEG, ... or .npy arrays)
    DIR/test/<digit>/*
    DIR/val/<digit>/*        optional; without it, a stratified, seeded split of train

Pictures may be of any size and either polarity (dark ink on paper, light on dark): each
becomes an MNIST-style 28x28 image by core.preprocess, the rule `digits predict`, the
served model and the web app read pictures by, so a model trained here reads a scan as
it was trained to. A `.npy` file holds one picture (H x W) or several (N x H x W).

The folder is checked before anything is read, and every problem is refused naming the
path (DataError): no train/ or test/, a file or a folder that is not a digit 0-9 where
label folders belong, a split without pictures, a digit without pictures (allowed with
data.allow_missing_classes=true), a file that is not an image. Hidden files (`.DS_Store`)
are skipped. NumPy and PIL only.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digit_experiments.core.preprocess import SIZE, as_images, decode_image, prepare
from digit_experiments.errors import DataError, ImageError

DIGITS = 10
SPLITS = ("train", "val", "test")
REQUIRED = ("train", "test")
LAYOUT = "train/<digit>/*, test/<digit>/* and optionally val/<digit>/*"


@dataclass
class FolderData:
    """The pictures of every split, made MNIST-style, and what identifies them."""

    root: Path
    images: dict[str, np.ndarray]  # split -> float32 (N, 28, 28) in [0, 1]
    labels: dict[str, np.ndarray]  # split -> uint8 (N,)
    # sha256 over every picture file's path (relative to root) and bytes: the same
    # folder gives the same digest on any machine.
    digest: str
    # split -> where each picture came from: its file (relative to root), with the index
    # in it for a .npy array of several (train/3/batch.npy[4]).
    pictures: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)  # split -> picture files read

    def counts(self, split: str) -> list[int]:
        """Pictures per digit 0-9 in `split` (a .npy array counts each picture)."""
        return np.bincount(self.labels[split], minlength=DIGITS).tolist()


def read_folder(
    root: Path | str, allow_missing_classes: bool = False, size: int = SIZE
) -> FolderData:
    """Every split of the folder, checked, read and preprocessed (see the module)."""
    root = Path(root).expanduser()
    plan = plan_folder(root, allow_missing_classes)
    digest = hashlib.sha256()
    images, labels, names = {}, {}, {}
    for split, files in plan.items():
        split_images, split_labels, split_names = [], [], []
        for digit, path in files:
            raw = path.read_bytes()
            relative = path.relative_to(root).as_posix()
            digest.update(f"{relative}\0{len(raw)}\0".encode())
            digest.update(raw)
            made, batch = _pictures(path, raw, size)
            split_images.append(made)
            split_labels.append(np.full(len(made), digit, dtype=np.uint8))
            split_names += [f"{relative}[{i}]" for i in range(len(made))] if batch else [relative]
        images[split] = np.concatenate(split_images)
        labels[split] = np.concatenate(split_labels)
        names[split] = split_names
    counts = {split: len(files) for split, files in plan.items()}
    return FolderData(root.resolve(), images, labels, digest.hexdigest(), names, counts)


def plan_folder(root: Path, allow_missing_classes: bool = False) -> dict:
    """split -> [(digit, file)] in a stable order, after checking the folder's shape
    (nothing is read yet). Raises DataError naming the path and the problem."""
    if not root.exists():
        raise DataError(f"{root}: data folder not found (data.source=folder wants {LAYOUT})")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (data.source=folder wants {LAYOUT})")
    plan = {}
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            if split in REQUIRED:
                raise DataError(
                    f"{folder}: split folder not found (data.source=folder wants {LAYOUT})"
                )
            continue
        plan[split] = _split_files(folder, split)
    for split, pictures in plan.items():
        folder = root / split
        if not pictures:
            raise DataError(f"{folder}: no pictures in this split (expected {split}/<digit>/*)")
        present = {digit for digit, _ in pictures}
        missing = [d for d in range(DIGITS) if d not in present]
        if missing and not allow_missing_classes:
            shown = ", ".join(f"{split}/{d}" for d in missing)
            raise DataError(
                f"{folder}: no pictures of digit{'s' if len(missing) > 1 else ''} "
                f"{', '.join(map(str, missing))} ({shown} missing or empty); set "
                "data.allow_missing_classes=true to use the folder without them"
            )
    return plan


def _split_files(folder: Path, split: str) -> list[tuple[int, Path]]:
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue  # .DS_Store and the like
        if not entry.is_dir():
            raise DataError(
                f"{entry}: a file directly in {split}/; pictures go in a folder named after "
                f"their digit ({split}/0/ ... {split}/9/)"
            )
        if len(entry.name) != 1 or not entry.name.isdigit():
            raise DataError(
                f"{entry}: label folder must be a digit 0-9, got {entry.name!r} (pictures "
                f"go in {split}/0/ ... {split}/9/)"
            )
        for item in sorted(entry.iterdir()):
            if item.name.startswith("."):
                continue
            if item.is_dir():
                raise DataError(f"{item}: a folder inside a label folder; put pictures there")
            found.append((int(entry.name), item))
    return found


def _pictures(path: Path, raw: bytes, size: int) -> tuple[np.ndarray, bool]:
    """One file -> (float32 (n, size, size), whether it is an array of several): an image
    file is one picture, a .npy file one (H x W) or several (N x H x W)."""
    batch = False
    try:
        if path.suffix.lower() == ".npy":
            try:
                array = np.load(io.BytesIO(raw), allow_pickle=False)
            except ValueError as e:
                raise ImageError(f"not a .npy array of pictures ({e})") from None
            batch = np.ndim(array) != 2
            pictures = as_images(array, size)
        else:
            try:
                pictures = [decode_image(raw)]
            except ImageError:
                raise ImageError("not an image file (PNG, JPEG, ...) or a .npy array") from None
        made = []
        for i, picture in enumerate(pictures):
            try:
                made.append(prepare(picture, size))
            except ImageError as e:
                raise ImageError(f"picture {i}: {e}" if batch else str(e)) from None
        return np.stack(made), batch
    except ImageError as e:
        raise DataError(f"{path}: {e}") from None
