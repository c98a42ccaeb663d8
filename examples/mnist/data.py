"""MNIST as numpy arrays: through tensorflow-datasets, or from a directory of IDX files.

Images come back as float32 ``(N, 28, 28, 1)`` scaled to [-1, 1], labels as int32 ``(N,)``.

Sources, in the order ``load(source="auto")`` tries them:

1. ``tfds.data_source("mnist")`` (no TensorFlow needed): the 60,000 training images and
   the 10,000 test images as the held-out set, when the dataset is prepared or downloadable.
2. A directory of the original gzipped IDX files (``--data-dir``; default
   ``$GRADTX_MNIST_DIR``, then ``../shared/data/mnist`` beside the repository). With
   ``train-*`` and ``t10k-*`` files: 60,000 / 10,000. With only the ``t10k-*`` files (the
   copy shipped beside this repository): those 10,000 images, split deterministically into
   8,000 training and 2,000 held-out images (every fifth image is held out).
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_DIR = "GRADTX_MNIST_DIR"
SHARED_DIR = REPO_ROOT.parent / "shared" / "data" / "mnist"
HELD_OUT_EVERY = 5  # with only the t10k files, images i with i % 5 == 4 are held out

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


class DataError(RuntimeError):
    """MNIST could not be loaded; the message says which file or source and why."""


class Split(NamedTuple):
    images: np.ndarray  # float32 (N, 28, 28, 1) in [-1, 1]
    labels: np.ndarray  # int32 (N,)


class Dataset(NamedTuple):
    train: Split
    held_out: Split
    source: str  # one line saying where the data came from, printed by the CLI


def scale_images(images: np.ndarray) -> np.ndarray:
    """uint8 ``(N, 28, 28[, 1])`` in [0, 255] -> float32 ``(N, 28, 28, 1)`` in [-1, 1]."""
    images = np.asarray(images, np.float32).reshape(-1, 28, 28, 1)
    return images / np.float32(127.5) - np.float32(1.0)


def _split(images: np.ndarray, labels: np.ndarray) -> Split:
    return Split(scale_images(images), np.asarray(labels, np.int32))


# ----------------------------------------------------------------------------- IDX files

def read_idx(path: Path) -> np.ndarray:
    """One IDX file (gzipped or not) as an array; ``DataError`` naming the file if it is
    missing, unreadable, truncated or not IDX."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"MNIST IDX file not found: {path}") from None
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"MNIST IDX file {path} is corrupt: cannot decompress it ({e})") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise DataError(f"MNIST IDX file {path} is corrupt: it does not start with an IDX header "
                        f"(got {raw[:4].hex() or 'an empty file'})")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"MNIST IDX file {path} is corrupt: header cut short ({len(raw)} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"MNIST IDX file {path} is corrupt: header says shape {shape} "
                        f"({expected} bytes in all), the file has {len(raw)} bytes")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape)


def _find(data_dir: Path, stem: str) -> Optional[Path]:
    for name in (f"{stem}.gz", stem, stem.replace("-idx", ".idx")):
        if (data_dir / name).exists():
            return data_dir / name
    return None


def _read_pair(data_dir: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """``{prefix}-images-idx3-ubyte[.gz]`` and ``{prefix}-labels-idx1-ubyte[.gz]``, checked."""
    arrays = []
    for stem, ndim in ((f"{prefix}-images-idx3-ubyte", 3), (f"{prefix}-labels-idx1-ubyte", 1)):
        path = _find(data_dir, stem)
        if path is None:
            raise DataError(f"MNIST IDX file not found: {data_dir / (stem + '.gz')} "
                            f"(expected the original files {prefix}-images-idx3-ubyte.gz and "
                            f"{prefix}-labels-idx1-ubyte.gz in {data_dir})")
        array = read_idx(path)
        if array.ndim != ndim or array.dtype != np.uint8 or (ndim == 3 and array.shape[1:] != (28, 28)):
            raise DataError(f"MNIST IDX file {path} holds a {array.dtype} array of shape "
                            f"{array.shape}, not MNIST {'images (N, 28, 28)' if ndim == 3 else 'labels (N,)'}")
        arrays.append(array)
    images, labels = arrays
    if len(images) != len(labels):
        raise DataError(f"MNIST IDX files in {data_dir} disagree: {len(images)} {prefix} images "
                        f"but {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise DataError(f"MNIST IDX labels in {data_dir} are corrupt: found label {labels.max()}")
    return images, labels


def load_idx(data_dir: Path) -> Dataset:
    """MNIST from the IDX files in ``data_dir`` (see the module docstring for the split)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"MNIST data directory not found: {data_dir}")
    test_images, test_labels = _read_pair(data_dir, "t10k")
    if _find(data_dir, "train-images-idx3-ubyte") is not None:
        train_images, train_labels = _read_pair(data_dir, "train")
        return Dataset(_split(train_images, train_labels), _split(test_images, test_labels),
                       f"IDX files in {data_dir} (train: {len(train_labels)}, held-out: t10k, "
                       f"{len(test_labels)} images)")
    held = np.arange(len(test_labels)) % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
    return Dataset(_split(test_images[~held], test_labels[~held]),
                   _split(test_images[held], test_labels[held]),
                   f"IDX files in {data_dir} (only the official test set: {int((~held).sum())} "
                   f"training images, every {HELD_OUT_EVERY}th image held out: {int(held.sum())})")


def default_data_dir() -> Optional[Path]:
    """``$GRADTX_MNIST_DIR``, else ``../shared/data/mnist`` beside the repository if it
    exists, else ``None``."""
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR])
    return SHARED_DIR if SHARED_DIR.is_dir() else None


# ----------------------------------------------------------------------------- TFDS

def load_tfds(data_dir: Optional[str] = None) -> Dataset:
    """MNIST through ``tfds.data_source`` (downloads it when not prepared); ``DataError``
    when tensorflow-datasets is missing or cannot provide the dataset."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(f"tensorflow-datasets is not installed ({e})") from None
    try:
        sources = {split: tfds.data_source("mnist", split=split, data_dir=data_dir)
                   for split in ("train", "test")}
        arrays = {split: _records_to_arrays(src) for split, src in sources.items()}
    except Exception as e:  # tfds reports an absent network or dataset in many ways
        raise DataError(f"tensorflow-datasets could not load or download MNIST "
                        f"({type(e).__name__}: {e})") from e
    return Dataset(_split(*arrays["train"]), _split(*arrays["test"]),
                   f"tensorflow-datasets mnist (train: {len(arrays['train'][1])}, "
                   f"held-out: test, {len(arrays['test'][1])} images)")


def _records_to_arrays(source) -> tuple[np.ndarray, np.ndarray]:
    records = [source[i] for i in range(len(source))]
    return (np.stack([r["image"] for r in records]).astype(np.uint8),
            np.array([r["label"] for r in records], np.int32))


# ----------------------------------------------------------------------------- entry point

def load(source: str = "auto", data_dir: Optional[Path] = None, tfds_data_dir: Optional[str] = None,
         limit: Optional[int] = None) -> Dataset:
    """MNIST from ``source`` ("auto": TFDS, falling back to IDX files; "tfds"; "idx").

    ``limit`` keeps the first ``limit`` training and held-out images (quick runs, tests).
    """
    if source not in ("auto", "tfds", "idx"):
        raise ValueError(f"load(source={source!r}): source must be 'auto', 'tfds' or 'idx'")
    dataset, tfds_error = None, None
    if source in ("auto", "tfds"):
        try:
            dataset = load_tfds(tfds_data_dir)
        except DataError as e:
            if source == "tfds":
                raise
            tfds_error = e
    if dataset is None:
        data_dir = data_dir if data_dir is not None else default_data_dir()
        if data_dir is None:
            raise DataError(
                "no MNIST data: " + (f"{tfds_error}; " if tfds_error else "")
                + f"and no IDX directory (pass --data-dir, set ${ENV_DIR}, or put the IDX files "
                f"in {SHARED_DIR})")
        dataset = load_idx(data_dir)
        if tfds_error is not None:
            dataset = dataset._replace(source=f"{dataset.source} [TFDS unavailable: {tfds_error}]")
    if limit is not None:
        dataset = dataset._replace(train=Split(*(a[:limit] for a in dataset.train)),
                                   held_out=Split(*(a[:limit] for a in dataset.held_out)))
    return dataset
