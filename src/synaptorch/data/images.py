"""Image data sets in the IDX format of MNIST (LeCun et al. 1998): a reader and Fashion-MNIST.

An IDX file, plain or gzipped (told apart by the gzip magic bytes 1f 8b, not by the name), is

    0x00 0x00 TYPE NDIM           TYPE: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                                        0x0D float32, 0x0E float64
    NDIM sizes, big-endian uint32
    the values, big-endian, in C order

Fashion-MNIST (Xiao et al. 2017, github.com/zalandoresearch/fashion-mnist) has the layout of
MNIST: 60,000 training and 10,000 test images of 28 x 28 grey levels (0 background, 255 ink) in
10 classes, 0 T-shirt/top to 9 ankle boot (`FASHION_MNIST_CLASSES`). Debian ships it as the package
`dataset-fashion-mnist`, whose four files, gzipped, lie in `/usr/share/datasets/fashion-mnist/`.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from synaptorch.errors import ConfigError, DataError

FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
MNIST_FILES = {  # split -> the stems of its images and labels files, shared by MNIST and Fashion-MNIST
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"


def parse_idx(data: bytes, source: str = "IDX data") -> Tensor:
    """The array that the bytes of an IDX file hold, in native byte order; `source` names it in errors."""
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in IDX_TYPES:
        raise DataError(f"{source} is not an IDX file (magic bytes {data[:4].hex() or 'none'})")
    dtype, ndim = IDX_TYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source} is truncated: {len(data)} bytes, the header of {ndim} sizes alone needs {header}")
    shape = tuple(int(size) for size in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(data) - header
    if found != expected:
        state = "truncated" if found < expected else "longer than its header says"
        raise DataError(f"{source} is {state}: shape {shape} needs {expected} bytes of values, found {found}")
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    # torch wants native byte order, and a writable array so that the tensor may be changed in place.
    return torch.from_numpy(values.astype(dtype.newbyteorder("="), copy=True))


def read_idx(path: str | Path) -> Tensor:
    """The array of an IDX file, gzipped or plain; a missing, unreadable or malformed file is a DataError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path} not found") from None
    except OSError as exc:
        raise DataError(f"{path} is not readable: {exc.strerror}") from None
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise DataError(f"{path} is a damaged or truncated gzip file ({exc})") from None
    return parse_idx(data, str(path))


IMAGE_SETS = {"fashion-mnist": (FASHION_MNIST_ROOT, FASHION_MNIST_PACKAGE)}  # name -> (folder, Debian package)


def _find_idx(root: Path, stem: str, missing: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    raise DataError(f"{missing}: no {stem} or {stem}.gz in {root}")


def load_idx_images(root: str | Path, split: str = "train", missing: str | None = None) -> tuple[Tensor, Tensor]:
    """Images (N, H, W) and labels (N,), both uint8, of a split of any MNIST-style folder.

    The folder holds the four files under their published names (`MNIST_FILES`), plain or
    gzipped: MNIST, Fashion-MNIST, KMNIST and the like. `missing` starts the error for a file
    that is not there.
    """
    if split not in MNIST_FILES:
        raise ConfigError(f"unknown split {split!r}; choose train or test")
    root = Path(root)
    missing = missing or f"not an MNIST-style data set: {root}"
    if not root.is_dir():
        raise DataError(f"{missing}: {root} is not a folder")
    images_stem, labels_stem = MNIST_FILES[split]
    images_path, labels_path = _find_idx(root, images_stem, missing), _find_idx(root, labels_stem, missing)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != torch.uint8 or images.dim() != 3:
        raise DataError(
            f"{images_path} holds {images.dtype} of shape {tuple(images.shape)}, not uint8 images (N, H, W)"
        )
    if labels.dtype != torch.uint8 or labels.dim() != 1 or len(labels) != len(images):
        raise DataError(
            f"{labels_path} holds {labels.dtype} of shape {tuple(labels.shape)}, not {len(images)} uint8 labels"
        )
    return images, labels


def load_fashion_mnist(split: str = "train", root: str | Path | None = None) -> tuple[Tensor, Tensor]:
    """Images (N, 28, 28) and labels (N,) of a Fashion-MNIST split, both uint8; N is 60,000 for train, 10,000 for test.

    `root` is any folder holding the four IDX files, plain or gzipped, under their published
    names; by default the folder of the Debian package `dataset-fashion-mnist`.
    """
    root = FASHION_MNIST_ROOT if root is None else Path(root)
    missing = (
        f"Fashion-MNIST not found (install the Debian package {FASHION_MNIST_PACKAGE} "
        "or pass the folder of the four IDX files as root)"
    )
    images, labels = load_idx_images(root, split, missing)
    if len(labels) and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise DataError(f"{root}: label {int(labels.max())} in the {split} split; Fashion-MNIST's are 0 to 9")
    return images, labels


def load_image_set(data: str | Path, split: str = "train") -> tuple[Tensor, Tensor]:
    """A split of a named data set (`IMAGE_SETS`: fashion-mnist) or of any folder of MNIST-style IDX files."""
    if str(data) in IMAGE_SETS:
        root, package = IMAGE_SETS[str(data)]
        if not root.is_dir():
            raise DataError(f"{data} is not installed: install the Debian package {package} (it fills {root})")
        return load_idx_images(root, split, f"{data} is incomplete (reinstall the Debian package {package})")
    path = Path(data)
    if not path.exists():
        raise DataError(f"--data {data}: neither a data set name ({', '.join(IMAGE_SETS)}) nor a folder")
    return load_idx_images(path, split, f"--data {data} is not an MNIST-style folder")


def flat_images(images: Tensor) -> Tensor:
    """uint8 images (N, H, W) -> float32 rows (N, H * W) in [0, 1]."""
    return images.reshape(len(images), -1).float() / 255.0


def load_image_rows(data: str | Path) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Both splits of `load_image_set(data)` as training rows (N, D) in [0, 1], their long labels (N,),
    then the test rows and labels: what the learning rules and the continual tasks train on."""
    train_images, train_labels = load_image_set(data, "train")
    test_images, test_labels = load_image_set(data, "test")
    return flat_images(train_images), train_labels.long(), flat_images(test_images), test_labels.long()
