import gzip
import struct

import pytest
import torch

from synaptorch.data.images import FASHION_MNIST_CLASSES, load_fashion_mnist, parse_idx, read_idx
from synaptorch.errors import ConfigError, DataError

# A 2 x 2 x 3 uint8 array, byte by byte: zero, zero, type 0x08, 3 dimensions, the sizes big-endian, the values.
TINY_HEADER = b"\x00\x00\x08\x03" + b"\x00\x00\x00\x02" + b"\x00\x00\x00\x02" + b"\x00\x00\x00\x03"
TINY_VALUES = bytes([0, 1, 2, 3, 4, 5, 250, 251, 252, 253, 254, 255])
TINY = TINY_HEADER + TINY_VALUES
TINY_ARRAY = torch.tensor([[[0, 1, 2], [3, 4, 5]], [[250, 251, 252], [253, 254, 255]]], dtype=torch.uint8)


def _single_line_error(excinfo, *fragments: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize("compress", [False, True])
def test_reads_a_hand_written_idx_file(tmp_path, compress):
    path = tmp_path / ("tiny.idx.gz" if compress else "tiny.idx")
    path.write_bytes(gzip.compress(TINY) if compress else TINY)
    array = read_idx(path)
    assert array.dtype == torch.uint8
    assert torch.equal(array, TINY_ARRAY)


def test_gzip_is_told_by_its_magic_bytes_not_the_name(tmp_path):
    (tmp_path / "plain.gz").write_bytes(TINY)
    (tmp_path / "packed").write_bytes(gzip.compress(TINY))
    assert torch.equal(read_idx(tmp_path / "plain.gz"), TINY_ARRAY)
    assert torch.equal(read_idx(tmp_path / "packed"), TINY_ARRAY)


def test_wider_types_are_big_endian_and_come_back_native():
    int16 = b"\x00\x00\x0b\x01" + struct.pack(">I", 3) + struct.pack(">3h", 1, -2, 300)
    assert parse_idx(int16).tolist() == [1, -2, 300]
    float32 = b"\x00\x00\x0d\x02" + struct.pack(">2I", 1, 2) + struct.pack(">2f", 0.5, -1.25)
    array = parse_idx(float32)
    assert array.dtype == torch.float32 and array.tolist() == [[0.5, -1.25]]


@pytest.mark.parametrize(
    "data",
    [b"\x01\x00\x08\x03" + TINY[4:], b"\x00\x00\x07\x03" + TINY[4:], b"", b"PK\x03\x04 a zip file"],
)
def test_bad_magic_number_is_a_one_line_data_error(tmp_path, data):
    path = tmp_path / "bad.idx"
    path.write_bytes(data)
    with pytest.raises(DataError) as excinfo:
        read_idx(path)
    _single_line_error(excinfo, str(path), "not an IDX file")


@pytest.mark.parametrize(
    ("data", "fragment"),
    [(TINY[:-1], "truncated"), (TINY_HEADER[:10], "truncated"), (TINY + b"\x00", "longer than its header says")],
)
def test_wrong_length_is_a_one_line_data_error(tmp_path, data, fragment):
    path = tmp_path / "short.idx"
    path.write_bytes(data)
    with pytest.raises(DataError) as excinfo:
        read_idx(path)
    _single_line_error(excinfo, str(path), fragment)


def test_truncated_gzip_is_a_one_line_data_error(tmp_path):
    path = tmp_path / "short.idx.gz"
    path.write_bytes(gzip.compress(TINY * 50)[:-12])
    with pytest.raises(DataError) as excinfo:
        read_idx(path)
    _single_line_error(excinfo, str(path), "truncated")


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "absent.idx")


def _write_split(root, stem_images, stem_labels, n, compress):
    images = b"\x00\x00\x08\x03" + struct.pack(">3I", n, 28, 28) + bytes(i % 256 for i in range(n * 784))
    labels = b"\x00\x00\x08\x01" + struct.pack(">I", n) + bytes(i % 10 for i in range(n))
    for stem, data in ((stem_images, images), (stem_labels, labels)):
        if compress:
            (root / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (root / stem).write_bytes(data)


def test_root_may_be_any_folder_of_the_four_files_plain_or_gzipped(tmp_path):
    _write_split(tmp_path, "train-images-idx3-ubyte", "train-labels-idx1-ubyte", 12, compress=True)
    _write_split(tmp_path, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 5, compress=False)
    images, labels = load_fashion_mnist("train", root=tmp_path)
    assert images.shape == (12, 28, 28) and labels.tolist() == [i % 10 for i in range(12)]
    assert images.flatten()[:256].tolist() == list(range(256))
    images, labels = load_fashion_mnist("test", root=str(tmp_path))
    assert images.shape == (5, 28, 28) and labels.tolist() == [0, 1, 2, 3, 4]


def test_labels_that_do_not_match_the_images_are_a_data_error(tmp_path):
    _write_split(tmp_path, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 5, compress=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 4) + bytes(4))
    with pytest.raises(DataError, match="not 5 uint8 labels"):
        load_fashion_mnist("test", root=tmp_path)


def test_missing_data_set_names_the_package_and_the_folder(tmp_path):
    with pytest.raises(DataError) as excinfo:
        load_fashion_mnist("train", root=tmp_path)
    _single_line_error(excinfo, "dataset-fashion-mnist", str(tmp_path), "train-images-idx3-ubyte")


def test_unknown_split_is_a_config_error():
    with pytest.raises(ConfigError, match="train or test"):
        load_fashion_mnist("validation")


@pytest.mark.parametrize(("split", "n"), [("train", 60_000), ("test", 10_000)])
def test_the_installed_fashion_mnist(split, n):
    images, labels = load_fashion_mnist(split)
    assert images.shape == (n, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (n,) and labels.dtype == torch.uint8
    assert torch.equal(torch.bincount(labels), torch.full((len(FASHION_MNIST_CLASSES),), n // 10))
    assert int(images.max()) == 255 and int(images.min()) == 0
