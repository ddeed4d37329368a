"""The real-dataset readers on small files written here in the real on-disk formats.

Each test writes a few examples exactly as the distributed files are laid out (CIFAR's Python-2 pickles,
MNIST's IDX files, SVHN's MATLAB .mat files, WikiText's token files, Cityscapes' folder tree), reads them
back through the registered dataset and compares every value.

torchvision verifies CIFAR and SVHN files against the md5 sums of the official downloads, which small
files cannot match. The tests therefore replace those class attributes (`CIFAR10.train_list`,
`CIFAR10.test_list`, `CIFAR10.meta`, the same for CIFAR100, and `SVHN.split_list`) with the md5 sums of the
files they wrote, through pytest's monkeypatch (restored after each test). torchvision's own integrity
check still runs unchanged on every file, as it would on a real download; `test_cifar10_corrupted_file`
shows that a file that does not match its md5 is rejected with a ConfigError. The production code has no
switch to skip the check.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from batchscale.errors import ConfigError
from batchscale.data import DATASETS, cityscapes, wikitext
from batchscale.data import images as image_data

datasets = pytest.importorskip("torchvision.datasets")


def md5(path) -> str:
    return hashlib.md5(open(path, "rb").read()).hexdigest()


# --------------------------------------------------------------------------------------------------
# Python-2 pickles, as the CIFAR files were written (cPickle protocol 2: byte strings are
# SHORT_BINSTRING/BINSTRING, arrays reduce to numpy.core.multiarray._reconstruct), so that reading them
# exercises torchvision's `pickle.load(f, encoding="latin1")` path exactly as the real files do.


class _Py2Str(bytes):
    """A Python 2 `str` (a byte string)."""


class _Py2Global:
    """A global written as `c<module>\\n<name>\\n` (callable only because pickle insists on it)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):
        raise NotImplementedError


class _Py2Pickler(pickle._Pickler):
    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2str(self, obj):
        data = bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    def save_py2global(self, obj):
        self.write(pickle.GLOBAL + obj.module.encode() + b"\n" + obj.name.encode() + b"\n")
        self.memoize(obj)

    dispatch[_Py2Str] = save_py2str
    dispatch[_Py2Global] = save_py2global

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray):
            assert obj.dtype == np.uint8
            state = (1, obj.shape, obj.dtype, False, _Py2Str(np.ascontiguousarray(obj).tobytes()))
            return (_Py2Global("numpy.core.multiarray", "_reconstruct"),
                    (_Py2Global("numpy", "ndarray"), (0,), _Py2Str(b"b")), state)
        if isinstance(obj, np.dtype):
            return (_Py2Global("numpy", "dtype"), (_Py2Str(b"u1"), 0, 1),
                    (3, _Py2Str(b"|"), None, None, None, -1, -1, 0))
        return NotImplemented


def _py2(obj):
    if isinstance(obj, str):
        return _Py2Str(obj.encode("latin1"))
    if isinstance(obj, dict):
        return {_py2(k): _py2(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_py2(v) for v in obj]
    return obj


def write_py2_pickle(path, obj) -> None:
    with open(path, "wb") as handle:
        _Py2Pickler(handle, protocol=2).dump(_py2(obj))


def test_py2_pickle_matches_the_cifar_layout(tmp_path):
    path = tmp_path / "batch"
    write_py2_pickle(path, {"batch_label": "training batch 1 of 5", "data": np.zeros((2, 3072), np.uint8)})
    raw = path.read_bytes()
    # protocol 2, a dict whose keys and values are Python 2 byte strings (SHORT_BINSTRING, opcode U)
    assert raw.startswith(b"\x80\x02}q\x00(U\x0bbatch_labelq\x01U\x15training batch 1 of 5q\x02U\x04data")
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in raw
    assert set(pickle.loads(raw, encoding="bytes")) == {b"batch_label", b"data"}  # keys are byte strings
    loaded = pickle.loads(raw, encoding="latin1")
    assert loaded["data"].shape == (2, 3072) and loaded["data"].dtype == np.uint8


# --------------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100


def _images(rng, count, channels=3, side=32):
    return rng.integers(0, 256, size=(count, channels, side, side), dtype=np.uint8)


def write_cifar10(root, rng, per_batch=3, test_count=4):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_images, train_labels = [], []
    for batch in range(1, 6):
        images, labels = _images(rng, per_batch), rng.integers(0, 10, per_batch).tolist()
        write_py2_pickle(folder / f"data_batch_{batch}", {
            "batch_label": f"training batch {batch} of 5", "labels": labels,
            "data": images.reshape(per_batch, 3072), "filenames": [f"img_{batch}_{i}.png" for i in range(per_batch)]})
        train_images.append(images)
        train_labels += labels
    test_images, test_labels = _images(rng, test_count), rng.integers(0, 10, test_count).tolist()
    write_py2_pickle(folder / "test_batch", {
        "batch_label": "testing batch 1 of 1", "labels": test_labels, "data": test_images.reshape(test_count, 3072),
        "filenames": [f"test_{i}.png" for i in range(test_count)]})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    write_py2_pickle(folder / "batches.meta", {"num_cases_per_batch": per_batch, "label_names": names,
                                               "num_vis": 3072})
    return folder, np.concatenate(train_images), np.array(train_labels), test_images, np.array(test_labels)


def accept_cifar_files(monkeypatch, reader, folder):
    """Point torchvision's expected md5 sums at the files the test wrote (see the module docstring)."""
    monkeypatch.setattr(reader, "train_list", [[name, md5(folder / name)] for name, _ in reader.train_list])
    monkeypatch.setattr(reader, "test_list", [[name, md5(folder / name)] for name, _ in reader.test_list])
    monkeypatch.setattr(reader, "meta", dict(reader.meta, md5=md5(folder / reader.meta["filename"])))


def test_cifar10_reads_what_was_written(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    folder, train_x, train_y, test_x, test_y = write_cifar10(tmp_path, rng)
    accept_cifar_files(monkeypatch, datasets.CIFAR10, folder)
    image_data.check_cifar10(str(tmp_path), {})
    splits = DATASETS["cifar10"].factory(seed=0, data_root=str(tmp_path), download=False)
    assert splits.train_x.dtype == torch.uint8 and splits.train_x.shape == (15, 3, 32, 32)
    assert torch.equal(splits.train_x, torch.from_numpy(train_x))
    assert torch.equal(splits.test_x, torch.from_numpy(test_x))
    assert splits.train_y.dtype == torch.int64 and splits.train_y.tolist() == train_y.tolist()
    assert splits.test_y.tolist() == test_y.tolist()
    assert splits.spec.task == "classification" and splits.spec.num_classes == 10
    assert splits.spec.input_shape == (3, 32, 32)
    expected_mean = train_x.astype(np.float64).transpose(1, 0, 2, 3).reshape(3, -1).mean(1) / 255
    expected_std = (train_x.astype(np.float64) / 255).transpose(1, 0, 2, 3).reshape(3, -1).std(1)
    np.testing.assert_allclose(splits.mean, expected_mean, rtol=1e-9)
    np.testing.assert_allclose(splits.std, expected_std, rtol=1e-6)


def test_cifar10_corrupted_file(tmp_path, monkeypatch):
    folder, *_ = write_cifar10(tmp_path, np.random.default_rng(1))
    accept_cifar_files(monkeypatch, datasets.CIFAR10, folder)
    batch = folder / "data_batch_3"
    data = bytearray(batch.read_bytes())
    data[-10] ^= 0xFF
    batch.write_bytes(bytes(data))
    image_data.check_cifar10(str(tmp_path), {})  # the pre-flight check only looks for the files
    with pytest.raises(ConfigError, match="could not be read or downloaded by torchvision") as err:
        DATASETS["cifar10"].factory(seed=0, data_root=str(tmp_path), download=False)
    assert str(folder) in str(err.value)


def test_cifar100_reads_what_was_written(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train_x, test_x = _images(rng, 6), _images(rng, 3)
    train_fine, test_fine = rng.integers(0, 100, 6).tolist(), rng.integers(0, 100, 3).tolist()
    for name, images, fine in (("train", train_x, train_fine), ("test", test_x, test_fine)):
        write_py2_pickle(folder / name, {
            "filenames": [f"{name}_{i}.png" for i in range(len(fine))], "batch_label": f"{name} batch",
            "fine_labels": fine, "coarse_labels": [label // 5 for label in fine],
            "data": images.reshape(len(fine), 3072)})
    write_py2_pickle(folder / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                                       "coarse_label_names": [f"coarse{i}" for i in range(20)]})
    accept_cifar_files(monkeypatch, datasets.CIFAR100, folder)
    image_data.check_cifar100(str(tmp_path), {})
    splits = DATASETS["cifar100"].factory(seed=0, data_root=str(tmp_path), download=False)
    assert torch.equal(splits.train_x, torch.from_numpy(train_x))
    assert torch.equal(splits.test_x, torch.from_numpy(test_x))
    assert splits.train_y.tolist() == train_fine and splits.test_y.tolist() == test_fine
    assert splits.spec.num_classes == 100


# --------------------------------------------------------------------------------------------------
# MNIST (IDX files, big-endian headers)


def write_idx(path, array: np.ndarray) -> None:
    magic = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)  # 0x08: unsigned byte
    with open(path, "wb") as handle:
        handle.write(magic + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes())


def write_mnist(root, rng, train_count=7, test_count=3):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    data = {
        "train": (rng.integers(0, 256, (train_count, 28, 28), dtype=np.uint8), rng.integers(0, 10, train_count)),
        "t10k": (rng.integers(0, 256, (test_count, 28, 28), dtype=np.uint8), rng.integers(0, 10, test_count)),
    }
    for prefix, (images, labels) in data.items():
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8))
    return data


def test_idx_header_layout(tmp_path):
    path = tmp_path / "labels"
    write_idx(path, np.array([3, 1, 4], dtype=np.uint8))
    assert path.read_bytes() == bytes.fromhex("00000801") + bytes.fromhex("00000003") + bytes([3, 1, 4])


def test_mnist_reads_what_was_written(tmp_path):
    data = write_mnist(tmp_path, np.random.default_rng(3))
    image_data.check_mnist(str(tmp_path), {})
    plain = DATASETS["mnist"].factory(seed=0, data_root=str(tmp_path), download=False, pad=False)
    assert plain.spec.input_shape == (1, 28, 28) and plain.train_x.dtype == torch.uint8
    assert torch.equal(plain.train_x[:, 0], torch.from_numpy(data["train"][0]))
    assert torch.equal(plain.test_x[:, 0], torch.from_numpy(data["t10k"][0]))
    assert plain.train_y.dtype == torch.int64 and plain.train_y.tolist() == data["train"][1].tolist()
    assert plain.test_y.tolist() == data["t10k"][1].tolist()
    assert len(plain.mean) == 1 and len(plain.std) == 1

    padded = DATASETS["mnist"].factory(seed=0, data_root=str(tmp_path), download=False)
    assert padded.spec.input_shape == (1, 32, 32) and padded.train_x.shape == (7, 1, 32, 32)
    assert torch.equal(padded.train_x[:, :, 2:30, 2:30], plain.train_x)
    border = padded.train_x.clone()
    border[:, :, 2:30, 2:30] = 0
    assert int(border.sum()) == 0


def test_mnist_train_examples_is_a_seeded_subset(tmp_path):
    data = write_mnist(tmp_path, np.random.default_rng(4))
    first = DATASETS["mnist"].factory(seed=5, data_root=str(tmp_path), download=False, pad=False, train_examples=4)
    again = DATASETS["mnist"].factory(seed=5, data_root=str(tmp_path), download=False, pad=False, train_examples=4)
    assert first.train_x.shape[0] == 4 and torch.equal(first.train_x, again.train_x)
    originals = torch.from_numpy(data["train"][0])
    for image, label in zip(first.train_x[:, 0], first.train_y):
        index = [i for i in range(originals.shape[0]) if torch.equal(originals[i], image)]
        assert len(index) == 1 and int(data["train"][1][index[0]]) == int(label)
    assert first.test_x.shape[0] == 3  # the test split is never capped
    with pytest.raises(ConfigError, match="train_examples"):
        image_data.check_mnist(str(tmp_path), {"train_examples": 0})


# --------------------------------------------------------------------------------------------------
# SVHN (.mat: X is (32, 32, 3, N) uint8, y is (N, 1) with 10 for the digit 0)


def write_svhn(folder, name, rng, count):
    from scipy.io import savemat

    images = rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)
    digits = rng.integers(0, 10, count)
    digits[0] = 0  # make sure the 10 -> 0 mapping is exercised
    y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(count, 1)
    savemat(folder / name, {"X": images.transpose(2, 3, 1, 0), "y": y})
    return images, digits


def accept_svhn_files(monkeypatch, folder):
    split_list = {split: [url, filename, md5(folder / filename) if (folder / filename).exists() else checksum]
                  for split, (url, filename, checksum) in datasets.SVHN.split_list.items()}
    monkeypatch.setattr(datasets.SVHN, "split_list", split_list)


def test_svhn_reads_what_was_written(tmp_path, monkeypatch):
    rng = np.random.default_rng(6)
    folder = tmp_path / "svhn"
    folder.mkdir()
    train = write_svhn(folder, "train_32x32.mat", rng, 5)
    test = write_svhn(folder, "test_32x32.mat", rng, 3)
    accept_svhn_files(monkeypatch, folder)
    image_data.check_svhn(str(tmp_path), {})
    splits = DATASETS["svhn"].factory(seed=0, data_root=str(tmp_path), download=False)
    assert splits.train_x.dtype == torch.uint8 and splits.spec.input_shape == (3, 32, 32)
    assert torch.equal(splits.train_x, torch.from_numpy(train[0]))
    assert torch.equal(splits.test_x, torch.from_numpy(test[0]))
    assert splits.train_y.tolist() == train[1].tolist() and splits.test_y.tolist() == test[1].tolist()
    assert splits.train_y[0] == 0 and splits.train_y.dtype == torch.int64

    with pytest.raises(ConfigError, match="extra_32x32.mat"):
        image_data.check_svhn(str(tmp_path), {"extra": True})
    extra = write_svhn(folder, "extra_32x32.mat", rng, 4)
    accept_svhn_files(monkeypatch, folder)
    both = DATASETS["svhn"].factory(seed=0, data_root=str(tmp_path), download=False, extra=True)
    assert torch.equal(both.train_x, torch.cat([torch.from_numpy(train[0]), torch.from_numpy(extra[0])]))
    assert both.train_y.tolist() == train[1].tolist() + extra[1].tolist()
    capped = DATASETS["svhn"].factory(seed=0, data_root=str(tmp_path), download=False, extra=True,
                                      train_examples=6)
    assert capped.train_x.shape[0] == 6 and capped.info["train_available"] == 9


# --------------------------------------------------------------------------------------------------
# WikiText-2 token files


def write_wikitext(root, train: str, valid: str, test: str):
    folder = root / "wikitext-2"
    folder.mkdir()
    for name, text in (("train", train), ("valid", valid), ("test", test)):
        (folder / f"wiki.{name}.tokens").write_text(text, encoding="utf8")
    return folder


def test_wikitext2_token_ids(tmp_path):
    # the real files open with a blank line, then " = Title = ", lines end with " \n"
    write_wikitext(tmp_path, " \n = Valkyria = \n \n the game is a role @-@ playing game . \n",
                   " \n the game . \n", " \n = Tower = \n the tower is tall . \n")
    wikitext.check_wikitext2(str(tmp_path), {})
    splits = DATASETS["wikitext2"].factory(seed=0, data_root=str(tmp_path), download=False, bptt=3)
    # vocabulary in order of first appearance in train, <unk> appended as train has none
    vocab = ["<eos>", "=", "Valkyria", "the", "game", "is", "a", "role", "@-@", "playing", ".", "<unk>"]
    train = [0, 1, 2, 1, 0, 0, 3, 4, 5, 6, 7, 8, 9, 4, 10, 0]  # 16 tokens -> 5 windows of 3
    test = [0, 1, 11, 1, 0, 3, 11, 5, 11, 10, 0]  # Tower, tower, tall are unknown; 11 tokens -> 3 windows
    assert splits.spec.task == "language_model" and splits.spec.num_classes == len(vocab)
    assert splits.spec.input_shape == (3,)
    assert splits.train_x.dtype == torch.int64 and splits.train_y.dtype == torch.int64
    assert splits.train_x.tolist() == [train[i:i + 3] for i in range(0, 15, 3)]
    assert splits.train_y.tolist() == [train[i + 1:i + 4] for i in range(0, 15, 3)]
    assert splits.test_x.tolist() == [test[i:i + 3] for i in range(0, 9, 3)]
    assert splits.test_y.tolist() == [test[i + 1:i + 4] for i in range(0, 9, 3)]
    assert splits.info["train_tokens"] == 16 and splits.info["test_tokens"] == 11
    assert splits.info["test_unknown_words"] == 3 and splits.info["vocab_size"] == 12

    valid = DATASETS["wikitext2"].factory(seed=0, data_root=str(tmp_path), download=False, bptt=2,
                                          test_split="valid")
    assert valid.test_x.tolist() == [[0, 3], [4, 10]] and valid.test_y.tolist() == [[3, 4], [10, 0]]


def test_wikitext2_existing_unk_is_kept(tmp_path):
    write_wikitext(tmp_path, " <unk> b <unk> \n", " b \n", " c b \n")
    splits = DATASETS["wikitext2"].factory(seed=0, data_root=str(tmp_path), download=False, bptt=1)
    assert splits.spec.num_classes == 3  # <unk>, b, <eos>
    assert splits.test_x.flatten().tolist() == [0, 1]  # c -> <unk> (0), b (1)


def test_wikitext2_bad_options(tmp_path):
    write_wikitext(tmp_path, "a\n", "a\n", "a\n")
    with pytest.raises(ConfigError, match="dataset.options.test_split"):
        wikitext.check_wikitext2(str(tmp_path), {"test_split": "train"})
    with pytest.raises(ConfigError, match="dataset.options.bptt"):
        wikitext.check_wikitext2(str(tmp_path), {"bptt": 0})
    with pytest.raises(ConfigError, match="dataset.options.window"):
        wikitext.check_wikitext2(str(tmp_path), {"window": 3})


# --------------------------------------------------------------------------------------------------
# Cityscapes (leftImg8bit / gtFine folder tree, 8-bit labelIds PNGs)

# label id -> train id, from the Cityscapes scripts (helpers/labels.py); every other id is ignored
OFFICIAL_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                      26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def write_cityscapes_image(root, split, city, stem, rng, height=16, width=32):
    from PIL import Image

    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    blocks = rng.integers(0, 34, (height // 2, width // 2), dtype=np.uint8)
    blocks.flat[:34] = np.arange(34)  # every label id occurs
    label_ids = np.kron(blocks, np.ones((2, 2), dtype=np.uint8))  # 2x2 blocks: nearest resizing is exact
    image_dir, label_dir = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image, "RGB").save(image_dir / f"{stem}_leftImg8bit.png")
    Image.fromarray(label_ids, "L").save(label_dir / f"{stem}_gtFine_labelIds.png")
    Image.fromarray(np.zeros((height, width, 4), np.uint8), "RGBA").save(label_dir / f"{stem}_gtFine_color.png")
    Image.fromarray(label_ids.astype(np.uint16) * 1000).save(label_dir / f"{stem}_gtFine_instanceIds.png")  # 16-bit
    (label_dir / f"{stem}_gtFine_polygons.json").write_text(
        json.dumps({"imgHeight": height, "imgWidth": width, "objects": []}))
    return image.transpose(2, 0, 1), label_ids


def expected_train_ids(label_ids):
    table = np.full(256, 255, dtype=np.int64)
    for label_id, train_id in OFFICIAL_TRAIN_IDS.items():
        table[label_id] = train_id
    return table[label_ids]


def test_cityscapes_reads_and_maps_to_19_classes(tmp_path):
    rng = np.random.default_rng(7)
    root = tmp_path / "cityscapes"
    # written out of order: the reader sorts by file name (aachen before bochum)
    bochum = write_cityscapes_image(root, "train", "bochum", "bochum_000000_000313", rng)
    aachen = write_cityscapes_image(root, "train", "aachen", "aachen_000000_000019", rng)
    frankfurt = write_cityscapes_image(root, "val", "frankfurt", "frankfurt_000000_000294", rng)
    cityscapes.check_cityscapes(str(tmp_path), {"size": [16, 32]})
    splits = DATASETS["cityscapes"].factory(seed=0, data_root=str(tmp_path), download=False, size=[16, 32])
    assert splits.spec.task == "segmentation" and splits.spec.num_classes == 19
    assert splits.spec.ignore_index == 255 and splits.spec.input_shape == (3, 16, 32)
    assert splits.train_x.dtype == torch.uint8 and splits.train_y.dtype == torch.int64
    assert torch.equal(splits.train_x, torch.from_numpy(np.stack([aachen[0], bochum[0]])))
    assert torch.equal(splits.test_x[0], torch.from_numpy(frankfurt[0]))
    expected = np.stack([expected_train_ids(aachen[1]), expected_train_ids(bochum[1])])
    assert torch.equal(splits.train_y, torch.from_numpy(expected))
    assert torch.equal(splits.test_y[0], torch.from_numpy(expected_train_ids(frankfurt[1])))
    assert set(torch.unique(splits.train_y).tolist()) == set(range(19)) | {255}
    # the mapping table itself against the official one
    table = cityscapes.cityscapes_train_ids()
    assert {i: int(table[i]) for i in range(256) if table[i] != 255} == OFFICIAL_TRAIN_IDS

    small = DATASETS["cityscapes"].factory(seed=0, data_root=str(tmp_path), download=False, size=[8, 16])
    assert small.train_x.shape == (2, 3, 8, 16) and small.spec.input_shape == (3, 8, 16)
    assert torch.equal(small.train_y[0], torch.from_numpy(expected_train_ids(aachen[1][::2, ::2])))


def test_cityscapes_image_without_labels(tmp_path):
    root = tmp_path / "cityscapes"
    write_cityscapes_image(root, "train", "aachen", "aachen_000000_000019", np.random.default_rng(8))
    write_cityscapes_image(root, "val", "lindau", "lindau_000000_000019", np.random.default_rng(9))
    (root / "gtFine" / "val" / "lindau" / "lindau_000000_000019_gtFine_labelIds.png").unlink()
    with pytest.raises(ConfigError, match="Cityscapes at .* could not be read by torchvision"):
        DATASETS["cityscapes"].factory(seed=0, data_root=str(tmp_path), download=False, size=[16, 32])


def test_cityscapes_bad_size(tmp_path):
    with pytest.raises(ConfigError, match="dataset.options.size"):
        cityscapes.check_cityscapes(str(tmp_path), {"size": [0, 5]})


# --------------------------------------------------------------------------------------------------
# missing data: one-line ConfigError naming the path and how to get the files

MISSING = {
    "cifar10": ("cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar.html"),
    "cifar100": ("cifar-100-python", "https://www.cs.toronto.edu/~kriz/cifar.html"),
    "mnist": (os.path.join("MNIST", "raw"), "set download: true"),
    "svhn": (os.path.join("svhn", "train_32x32.mat"), "http://ufldl.stanford.edu/housenumbers/"),
    "wikitext2": (os.path.join("wikitext-2", "wiki.train.tokens"), "wikitext-2-v1.zip"),
    "cityscapes": (os.path.join("cityscapes", "leftImg8bit", "train"), "registered account"),
}


@pytest.mark.parametrize("name", sorted(MISSING))
def test_missing_data_raises_config_error(tmp_path, name):
    entry = DATASETS[name]
    assert entry.real and entry.check is not None
    path, how = MISSING[name]
    with pytest.raises(ConfigError) as err:
        entry.check(str(tmp_path), {})
    message = str(err.value)
    assert "\n" not in message and message.startswith("config key data_root: ")
    assert os.path.join(str(tmp_path), path) in message and how in message
    with pytest.raises(ConfigError) as err:  # the factory says the same without download
        entry.factory(seed=0, data_root=str(tmp_path), download=False)
    assert os.path.join(str(tmp_path), path) in str(err.value)


def test_missing_data_message_example():
    with pytest.raises(ConfigError) as err:
        image_data.check_cifar10("data", {})
    assert str(err.value) == ("config key data_root: CIFAR-10 not found at data/cifar-10-batches-py; download "
                              "cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and extract "
                              "it into data, or set download: true")


def test_cityscapes_message_mentions_the_account(tmp_path):
    with pytest.raises(ConfigError, match=r"cityscapes-dataset\.com"):
        cityscapes.check_cityscapes(str(tmp_path), {})


def test_unknown_option_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="dataset.options.extra: not an option of dataset 'cifar10'"):
        image_data.check_cifar10(str(tmp_path), {"extra": True})
