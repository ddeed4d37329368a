"""Real datasets read from `data_root`: CIFAR-10/100, MNIST, SVHN (torchvision's readers), WikiText-2
(its token files) and Cityscapes (torchvision's reader).

Where each dataset must lie (`data_root` defaults to `data`):

    cifar10     data_root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
    cifar100    data_root/cifar-100-python/{train, test, meta}
    mnist       data_root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte
    svhn        data_root/svhn/{train,test[,extra]}_32x32.mat
    wikitext2   data_root/wikitext-2/wiki.{train,valid,test}.tokens
    cityscapes  data_root/cityscapes/{leftImg8bit,gtFine}/{train,val}/<city>/...

CIFAR, MNIST and SVHN are fetched by torchvision when the study allows `download: true`; WikiText-2 and
Cityscapes are never downloaded (Cityscapes needs a registered account). Every dataset registers a
`check(data_root, options)` that raises a one-line `ConfigError` naming the missing path and how to get
the data, before any job starts. Files that exist but fail torchvision's md5 check raise `ConfigError`
when the factory runs.

Images are returned as uint8 (N, C, H, W) with the per-channel mean/std of the returned training split
(0..1 scale) in `Splits.mean`/`Splits.std`; the engine normalises on the device.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from batchscale.config import ConfigError, DataMissingError
from batchscale.data import DataSpec, Splits, register_dataset

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
WIKITEXT_URL = "https://wikitext.smerity.com/wikitext-2-v1.zip"
CITYSCAPES_URL = "https://www.cityscapes-dataset.com"


# ---------------------------------------------------------------------------------------------------
# helpers shared with text.py and segmentation.py


def reject_unknown_options(dataset: str, options: dict, allowed) -> None:
    """ConfigError naming the first option the dataset does not take."""
    for name in options:
        if name not in allowed:
            raise ConfigError(
                f"config key dataset.options.{name}: not an option of dataset {dataset!r}; allowed: "
                f"{', '.join(sorted(allowed)) or '(none)'}")


def positive_int(value, key: str, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"config key dataset.options.{key}: {value!r} is not a positive integer")
    return int(value)


def channel_stats(images: torch.Tensor, chunk: int = 8192) -> tuple[tuple, tuple]:
    """Per-channel mean and std (0..1 scale) of uint8 (N, C, H, W) images, accumulated in float64."""
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):
        block = images[start:start + chunk].to(torch.float64) / 255.0
        total += block.sum(dim=(0, 2, 3))
        total_sq += (block * block).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(1e-12).sqrt()
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def seeded_cap(count: int, cap: int | None, seed: int) -> torch.Tensor | None:
    """Sorted indices of a seeded subset of `cap` out of `count` examples (None: keep all)."""
    if cap is None or cap >= count:
        return None
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(count, generator=generator)[:cap].sort().values


def _missing(what: str, path: str, how: str) -> DataMissingError:
    return DataMissingError(f"config key data_root: {what} not found at {path}; {how}")


def _first_missing(paths) -> str | None:
    for path in paths:
        if not os.path.exists(path):
            return path
    return None


def _torchvision_error(what: str, path: str, err: Exception,
                       fix: str = "delete it and set download: true, or fetch it again",
                       failed: str = "could not be read or downloaded") -> ConfigError:
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return ConfigError(f"config key data_root: {what} at {path} {failed} by torchvision ({reason}); {fix}")


def _image_splits(train_x, train_y, test_x, test_y, num_classes: int, info: dict) -> Splits:
    mean, std = channel_stats(train_x)
    info = dict(info, num_train=int(train_x.shape[0]), num_test=int(test_x.shape[0]))
    spec = DataSpec("classification", tuple(train_x.shape[1:]), num_classes)
    return Splits(train_x, train_y.to(torch.int64), test_x, test_y.to(torch.int64), spec, mean, std, info)


# ---------------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100


def _cifar_paths(data_root: str, hundred: bool) -> tuple[str, list[str]]:
    if hundred:
        folder = os.path.join(data_root, "cifar-100-python")
        names = ["train", "test", "meta"]
    else:
        folder = os.path.join(data_root, "cifar-10-batches-py")
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    return folder, [os.path.join(folder, name) for name in names]


def _check_cifar(data_root: str, hundred: bool) -> None:
    folder, files = _cifar_paths(data_root, hundred)
    missing = _first_missing([folder] + files)
    if missing is not None:
        what = "CIFAR-100" if hundred else "CIFAR-10"
        archive = "cifar-100-python.tar.gz" if hundred else "cifar-10-python.tar.gz"
        raise _missing(what, missing, f"download {archive} from {CIFAR_URL} and extract it into {data_root}, "
                                      f"or set download: true")


def check_cifar10(data_root: str, options: dict) -> None:
    reject_unknown_options("cifar10", options, ())
    _check_cifar(data_root, hundred=False)


def check_cifar100(data_root: str, options: dict) -> None:
    reject_unknown_options("cifar100", options, ())
    _check_cifar(data_root, hundred=True)


def _load_cifar(data_root: str, download: bool, hundred: bool) -> Splits:
    from torchvision import datasets

    if not download:
        _check_cifar(data_root, hundred)
    reader = datasets.CIFAR100 if hundred else datasets.CIFAR10
    what = "CIFAR-100" if hundred else "CIFAR-10"
    folder, _ = _cifar_paths(data_root, hundred)
    try:
        train = reader(root=data_root, train=True, download=download)
        test = reader(root=data_root, train=False, download=download)
    except (RuntimeError, OSError) as err:  # torchvision: "Dataset not found or corrupted" (md5), no network
        raise _torchvision_error(what, folder, err) from None

    def to_tensors(part):
        images = torch.from_numpy(np.ascontiguousarray(part.data)).permute(0, 3, 1, 2).contiguous()
        return images, torch.as_tensor(part.targets, dtype=torch.int64)

    train_x, train_y = to_tensors(train)
    test_x, test_y = to_tensors(test)
    info = {"source": f"torchvision.datasets.{reader.__name__}", "path": folder}
    return _image_splits(train_x, train_y, test_x, test_y, 100 if hundred else 10, info)


@register_dataset("cifar10", check=check_cifar10, real=True)
def cifar10(*, seed: int, data_root: str, download: bool, **options) -> Splits:
    """CIFAR-10: 50,000 train / 10,000 test uint8 (3, 32, 32) images, 10 classes."""
    reject_unknown_options("cifar10", options, ())
    return _load_cifar(data_root, download, hundred=False)


@register_dataset("cifar100", check=check_cifar100, real=True)
def cifar100(*, seed: int, data_root: str, download: bool, **options) -> Splits:
    """CIFAR-100 (fine labels): 50,000 train / 10,000 test uint8 (3, 32, 32) images, 100 classes."""
    reject_unknown_options("cifar100", options, ())
    return _load_cifar(data_root, download, hundred=True)


# ---------------------------------------------------------------------------------------------------
# MNIST

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")
MNIST_OPTIONS = ("train_examples", "pad")


def _mnist_present(data_root: str) -> str | None:
    """None when torchvision can read MNIST from data_root, else the first missing path."""
    raw = os.path.join(data_root, "MNIST", "raw")
    missing = _first_missing([raw] + [os.path.join(raw, name) for name in MNIST_FILES])
    if missing is None:
        return None
    processed = os.path.join(data_root, "MNIST", "processed")  # torchvision's legacy cache is accepted too
    if _first_missing([os.path.join(processed, "training.pt"), os.path.join(processed, "test.pt")]) is None:
        return None
    return missing


def check_mnist(data_root: str, options: dict) -> None:
    reject_unknown_options("mnist", options, MNIST_OPTIONS)
    positive_int(options.get("train_examples"), "train_examples", allow_none=True)
    missing = _mnist_present(data_root)
    if missing is not None:
        raw = os.path.join(data_root, "MNIST", "raw")
        raise _missing("MNIST", missing, f"download the four *-ubyte.gz files from {MNIST_URL} and gunzip them "
                                         f"into {raw}, or set download: true")


@register_dataset("mnist", check=check_mnist, real=True)
def mnist(*, seed: int, data_root: str, download: bool, train_examples: int | None = None,
          pad: bool = True, **options) -> Splits:
    """MNIST: 60,000 train / 10,000 test digits, 10 classes.

    Images are zero-padded from 28x28 to 32x32 (`pad: true`, the default) so that the CIFAR-shaped
    architectures apply unchanged; `pad: false` returns them as (1, 28, 28). `train_examples` keeps a
    seeded subset of the training split (the paper uses 50,000).
    """
    from torchvision import datasets

    reject_unknown_options("mnist", options, MNIST_OPTIONS)
    cap = positive_int(train_examples, "train_examples", allow_none=True)
    if not download:
        check_mnist(data_root, {})
    try:
        train = datasets.MNIST(root=data_root, train=True, download=download)
        test = datasets.MNIST(root=data_root, train=False, download=download)
    except (RuntimeError, OSError) as err:
        raise _torchvision_error("MNIST", os.path.join(data_root, "MNIST"), err) from None
    train_x, train_y = train.data.unsqueeze(1).contiguous(), train.targets.to(torch.int64)
    test_x, test_y = test.data.unsqueeze(1).contiguous(), test.targets.to(torch.int64)
    if pad:
        train_x = torch.nn.functional.pad(train_x, (2, 2, 2, 2))
        test_x = torch.nn.functional.pad(test_x, (2, 2, 2, 2))
    available = int(train_x.shape[0])
    index = seeded_cap(available, cap, seed)
    if index is not None:
        train_x, train_y = train_x[index], train_y[index]
    info = {"source": "torchvision.datasets.MNIST", "path": os.path.join(data_root, "MNIST"), "padded": bool(pad),
            "train_available": available}
    return _image_splits(train_x, train_y, test_x, test_y, 10, info)


# ---------------------------------------------------------------------------------------------------
# SVHN

SVHN_OPTIONS = ("train_examples", "extra")


def _svhn_root(data_root: str) -> str:
    # torchvision's SVHN keeps its .mat files directly in `root`; a subfolder keeps data_root tidy.
    return os.path.join(data_root, "svhn")


def check_svhn(data_root: str, options: dict) -> None:
    reject_unknown_options("svhn", options, SVHN_OPTIONS)
    positive_int(options.get("train_examples"), "train_examples", allow_none=True)
    root = _svhn_root(data_root)
    names = ["train_32x32.mat", "test_32x32.mat"] + (["extra_32x32.mat"] if options.get("extra") else [])
    missing = _first_missing([os.path.join(root, name) for name in names])
    if missing is not None:
        raise _missing("SVHN", missing, f"download {os.path.basename(missing)} from {SVHN_URL} into {root}, "
                                        f"or set download: true")


@register_dataset("svhn", check=check_svhn, real=True)
def svhn(*, seed: int, data_root: str, download: bool, train_examples: int | None = None,
         extra: bool = False, **options) -> Splits:
    """SVHN (cropped digits): 73,257 train (+531,131 with `extra: true`, 604,388 in all) / 26,032 test uint8
    (3, 32, 32) images, 10 classes (digit 0 has label 0). `train_examples` keeps a seeded subset of the
    training split (paper: 50,000; Fig. 4 uses the extra split)."""
    from torchvision import datasets

    reject_unknown_options("svhn", options, SVHN_OPTIONS)
    cap = positive_int(train_examples, "train_examples", allow_none=True)
    options = {"extra": extra}
    if not download:
        check_svhn(data_root, options)
    root = _svhn_root(data_root)
    parts = ["train", "extra"] if extra else ["train"]
    try:
        train_parts = [datasets.SVHN(root=root, split=part, download=download) for part in parts]
        test = datasets.SVHN(root=root, split="test", download=download)
    except (RuntimeError, OSError) as err:
        raise _torchvision_error("SVHN", root, err) from None

    def to_tensors(part):
        return torch.from_numpy(np.ascontiguousarray(part.data)), torch.from_numpy(part.labels.astype(np.int64))

    pieces = [to_tensors(part) for part in train_parts]
    del train_parts
    train_x = torch.cat([p[0] for p in pieces]) if len(pieces) > 1 else pieces[0][0]
    train_y = torch.cat([p[1] for p in pieces]) if len(pieces) > 1 else pieces[0][1]
    del pieces
    test_x, test_y = to_tensors(test)
    available = int(train_x.shape[0])
    index = seeded_cap(available, cap, seed)
    if index is not None:
        train_x, train_y = train_x[index], train_y[index]
    info = {"source": "torchvision.datasets.SVHN", "path": root, "extra": bool(extra), "train_available": available}
    return _image_splits(train_x, train_y, test_x, test_y, 10, info)


# ---------------------------------------------------------------------------------------------------
# WikiText-2 (word level, as in PyTorch's word_language_model example)

WIKITEXT_OPTIONS = ("bptt", "test_split")


def _wikitext_folder(data_root: str) -> str:
    return os.path.join(data_root, "wikitext-2")


def check_wikitext2(data_root: str, options: dict) -> None:
    reject_unknown_options("wikitext2", options, WIKITEXT_OPTIONS)
    positive_int(options.get("bptt", 35), "bptt")
    test_split = options.get("test_split", "test")
    if test_split not in ("test", "valid"):
        raise ConfigError(f"config key dataset.options.test_split: {test_split!r} is not allowed; "
                          f"allowed values: test, valid")
    folder = _wikitext_folder(data_root)
    missing = _first_missing([os.path.join(folder, f"wiki.{name}.tokens") for name in ("train", test_split)])
    if missing is not None:
        raise _missing("WikiText-2", missing, f"download wikitext-2-v1.zip (e.g. {WIKITEXT_URL}) and extract it "
                                              f"into {data_root} (download: true does not fetch it)")


def read_tokens(path: str) -> list[str]:
    """Words of a token file, `<eos>` after every line (blank lines included), as in PyTorch's example."""
    words: list[str] = []
    with open(path, encoding="utf8") as handle:
        for line in handle:
            words.extend(line.split())
            words.append("<eos>")
    return words


def build_vocab(words: list[str], specials=("<unk>", "<eos>")) -> dict[str, int]:
    """Word -> id in order of first appearance; `specials` missing from `words` are appended."""
    vocab: dict[str, int] = {}
    for word in words:
        if word not in vocab:
            vocab[word] = len(vocab)
    for word in specials:
        vocab.setdefault(word, len(vocab))
    return vocab


def encode(words: list[str], vocab: dict[str, int]) -> tuple[torch.Tensor, int]:
    """Token ids (unknown words -> <unk>) and the number of unknown words."""
    unk = vocab["<unk>"]
    ids = [vocab.get(word, unk) for word in words]
    unknown = sum(1 for word in words if word not in vocab)
    return torch.tensor(ids, dtype=torch.int64), unknown


def windows(tokens: torch.Tensor, bptt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping windows: x = tokens[i:i+bptt], y = tokens[i+1:i+bptt+1], i = 0, bptt, 2*bptt, ..."""
    count = (tokens.numel() - 1) // bptt
    x = tokens[:count * bptt].reshape(count, bptt)
    y = tokens[1:count * bptt + 1].reshape(count, bptt)
    return x.contiguous(), y.contiguous()


@register_dataset("wikitext2", check=check_wikitext2, real=True)
def wikitext2(*, seed: int, data_root: str, download: bool, bptt: int = 35, test_split: str = "test",
              **options) -> Splits:
    """WikiText-2 word-level language modelling from its token files; vocabulary from the train split
    (33,278 words for the real files), examples are non-overlapping windows of `bptt` tokens.
    `test_split: valid` evaluates on wiki.valid.tokens instead of wiki.test.tokens."""
    options = dict(options, bptt=bptt, test_split=test_split)
    check_wikitext2(data_root, options)  # no download exists for it, so always check
    bptt = int(bptt)
    folder = _wikitext_folder(data_root)
    train_words = read_tokens(os.path.join(folder, "wiki.train.tokens"))
    test_words = read_tokens(os.path.join(folder, f"wiki.{test_split}.tokens"))
    vocab = build_vocab(train_words)
    train_ids, _ = encode(train_words, vocab)
    test_ids, test_unknown = encode(test_words, vocab)
    train_x, train_y = windows(train_ids, bptt)
    test_x, test_y = windows(test_ids, bptt)
    info = {"source": "wikitext-2 token files", "path": folder, "test_split": test_split,
            "vocab_size": len(vocab), "train_tokens": int(train_ids.numel()), "test_tokens": int(test_ids.numel()),
            "test_unknown_words": int(test_unknown), "bptt": bptt}
    spec = DataSpec("language_model", (bptt,), len(vocab))
    return Splits(train_x, train_y, test_x, test_y, spec, info=info)


# ---------------------------------------------------------------------------------------------------
# Cityscapes (fine annotations, 19 train classes)

CITYSCAPES_OPTIONS = ("size", "test_split")


def cityscapes_train_ids() -> np.ndarray:
    """Lookup table label id (0..255) -> train id (0..18), everything else 255 (ignored)."""
    from torchvision.datasets import Cityscapes

    table = np.full(256, 255, dtype=np.uint8)
    for cls in Cityscapes.classes:
        if 0 <= cls.id < 256 and 0 <= cls.train_id < 255:
            table[cls.id] = cls.train_id
    return table


def _cityscapes_root(data_root: str) -> str:
    return os.path.join(data_root, "cityscapes")


def _cityscapes_size(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (size, size)
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in size)):
        raise ConfigError(f"config key dataset.options.size: {size!r} is not [height, width] in pixels")
    return int(size[0]), int(size[1])


def check_cityscapes(data_root: str, options: dict) -> None:
    reject_unknown_options("cityscapes", options, CITYSCAPES_OPTIONS)
    _cityscapes_size(options.get("size", (256, 512)))
    test_split = options.get("test_split", "val")
    if test_split not in ("val", "test"):
        raise ConfigError(f"config key dataset.options.test_split: {test_split!r} is not allowed; "
                          f"allowed values: val, test")
    root = _cityscapes_root(data_root)
    zips = [os.path.join(root, "leftImg8bit_trainvaltest.zip"), os.path.join(root, "gtFine_trainvaltest.zip")]
    if _first_missing(zips) is None:  # torchvision extracts these itself
        return
    folders = [os.path.join(root, kind, split) for split in ("train", test_split) for kind in ("leftImg8bit", "gtFine")]
    missing = _first_missing(folders)
    if missing is not None:
        raise _missing("Cityscapes", missing, f"it needs a registered account at {CITYSCAPES_URL}: download "
                                              f"leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip into {root} "
                                              f"(download: true cannot fetch it)")


def _read_cityscapes_split(root: str, split: str, size: tuple[int, int], table: np.ndarray):
    from PIL import Image
    from torchvision.datasets import Cityscapes

    reader = Cityscapes(root, split=split, mode="fine", target_type="semantic")
    order = sorted(range(len(reader.images)), key=lambda i: reader.images[i])  # os.listdir order is arbitrary
    height, width = size

    def load(index):
        image, target = reader[index]
        if image.size != (width, height):
            image = image.resize((width, height), Image.BILINEAR)
        if target.size != (width, height):
            target = target.resize((width, height), Image.NEAREST)
        pixels = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)
        labels = table[np.asarray(target, dtype=np.uint8)]
        return pixels, labels

    count = len(order)
    x = torch.empty((count, 3, height, width), dtype=torch.uint8)
    y = torch.empty((count, height, width), dtype=torch.int64)
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        for slot, (pixels, labels) in enumerate(pool.map(load, order)):
            x[slot] = torch.from_numpy(np.ascontiguousarray(pixels))
            y[slot] = torch.from_numpy(labels.astype(np.int64))
    return x, y, [reader.images[i] for i in order]


@register_dataset("cityscapes", check=check_cityscapes, real=True)
def cityscapes(*, seed: int, data_root: str, download: bool, size=(256, 512), test_split: str = "val",
               **options) -> Splits:
    """Cityscapes semantic segmentation (fine annotations): 2,975 train images, evaluated on the 500 `val`
    images (the test split's labels are withheld). Label ids are mapped to the 19 train ids, every other
    id to 255 (ignore_index). Images are resized to `size` = [height, width] (bilinear), labels with
    nearest neighbour. All files are decoded on every load (2048x1024 PNGs: allow a few minutes)."""
    options = dict(options, size=size, test_split=test_split)
    check_cityscapes(data_root, options)  # never downloadable, so always check
    size = _cityscapes_size(size)
    root = _cityscapes_root(data_root)
    table = cityscapes_train_ids()
    try:
        train_x, train_y, _ = _read_cityscapes_split(root, "train", size, table)
        test_x, test_y, _ = _read_cityscapes_split(root, test_split, size, table)
    except (RuntimeError, OSError) as err:  # e.g. an image without its gtFine labelIds file
        raise _torchvision_error("Cityscapes", root, err, f"it needs both leftImg8bit and gtFine from "
                                                          f"{CITYSCAPES_URL}", "could not be read") from None
    mean, std = channel_stats(train_x)
    info = {"source": "torchvision.datasets.Cityscapes", "path": root, "test_split": test_split,
            "size": list(size), "num_train": int(train_x.shape[0]), "num_test": int(test_x.shape[0])}
    spec = DataSpec("segmentation", (3, size[0], size[1]), 19, ignore_index=255)
    return Splits(train_x, train_y, test_x, test_y, spec, mean, std, info)
