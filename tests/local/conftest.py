import gzip
import struct
from pathlib import Path

import pytest
import torch

from synaptorch.data.images import MNIST_FILES


def write_idx(path: Path, array: torch.Tensor) -> None:
    header = b"\x00\x00\x08" + bytes([array.dim()]) + b"".join(struct.pack(">I", n) for n in array.shape)
    path.write_bytes(gzip.compress(header + array.to(torch.uint8).numpy().tobytes()))


def _clustered_images(n: int, side: int, n_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose class decides which block of pixels is bright: easy for any rule."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, n_classes, (n,), generator=generator)
    images = torch.randint(0, 60, (n, side * side), generator=generator)
    block = side * side // n_classes
    for c in range(n_classes):
        images[labels == c, c * block : (c + 1) * block] += 180
    return images.clamp(max=255).view(n, side, side), labels


@pytest.fixture(scope="session")
def clustered():
    """(n, side, n_classes, seed) -> uint8 images (n, side, side) and labels (n,) of an easy task."""
    return _clustered_images


@pytest.fixture
def idx_folder(tmp_path) -> Path:
    """An MNIST-style folder of 6 x 6 images in 3 classes: 600 to train, 300 to test."""
    folder = tmp_path / "images"
    folder.mkdir()
    for split, n, seed in (("train", 600, 0), ("test", 300, 1)):
        images, labels = _clustered_images(n, 6, 3, seed)
        images_stem, labels_stem = MNIST_FILES[split]
        write_idx(folder / (images_stem + ".gz"), images)
        write_idx(folder / (labels_stem + ".gz"), labels)
    return folder
