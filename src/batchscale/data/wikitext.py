"""WikiText-2 from its token files under `data_root` (word level, as in PyTorch's word_language_model
example); never downloaded."""

from __future__ import annotations

import os

import torch

from batchscale.data import DataSpec, Splits, register_dataset
from batchscale.data.files import (WIKITEXT_URL, first_missing, missing_error, positive_int, reject_unknown_options,
                                   windows)
from batchscale.errors import ConfigError
from batchscale.spec.options import POSITIVE_INT

TOKENS = {"train": 2_088_628, "test": 245_569, "valid": 217_646}  # with <eos> after every line, as read_tokens
VOCABULARY = 33_278


def wikitext2_shape(options: dict):
    """Non-overlapping windows of bptt tokens, as `windows` cuts them."""
    bptt = int(options.get("bptt", 35))
    test = TOKENS[options.get("test_split", "test")]
    return DataSpec("language_model", (bptt,), VOCABULARY), (TOKENS["train"] - 1) // bptt, (test - 1) // bptt


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
    missing = first_missing([os.path.join(folder, f"wiki.{name}.tokens") for name in ("train", test_split)])
    if missing is not None:
        raise missing_error("WikiText-2", missing, f"download wikitext-2-v1.zip (e.g. {WIKITEXT_URL}) and extract it "
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


@register_dataset("wikitext2", check=check_wikitext2, real=True, shape=wikitext2_shape,
                  options={"bptt": POSITIVE_INT, "test_split": {"type": "string", "enum": ["test", "valid"]}})
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
