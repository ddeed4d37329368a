"""`text_corpus`: an embedded English corpus for word-level language modelling.

The text is the help pages that every CPython installation ships in `pydoc_data.topics.topics` (79 topics,
about 120k word tokens for Python 3.11; the exact text depends on the Python version, so `Splits.info`
records the version and a sha256 of the corpus). Preparation mirrors WikiText:

- each topic is cut into paragraphs (blank-line separated; wrapped lines are joined); reST underline
  lines (`*****`, `=====`, ...) are dropped;
- a paragraph becomes word tokens (runs of letters with an optional apostrophe suffix, runs of digits, and
  every other non-space character on its own), lowercased unless `lowercase: false`, then `<eos>`;
- the topics are split into train and test with a seeded permutation (whole topics, so no paragraph is
  shared): test takes topics, in a seeded order, while it stays within `test_fraction` of the tokens;
- the vocabulary is `<unk>` (id 0), `<eos>` (id 1) and the most frequent train words (ties broken
  alphabetically) up to `vocab_size` entries; other words become `<unk>`;
- examples are non-overlapping windows: x = tokens[i:i+bptt], y = tokens[i+1:i+bptt+1].
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections import Counter

import torch

from batchscale.data import DataSpec, Splits, register_dataset
from batchscale.data.files import positive_int, reject_unknown_options, windows
from batchscale.errors import ConfigError
from batchscale.spec.options import OPEN_FRACTION, POSITIVE_INT

TEXT_OPTIONS = ("vocab_size", "bptt", "lowercase", "test_fraction")
WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?|\d+|[^\sA-Za-z\d]")
UNDERLINE = re.compile(r"^\s*([*=\-~^#+])\1{2,}\s*$")


def corpus_topics() -> dict[str, str]:
    from pydoc_data.topics import topics

    return dict(topics)


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    """Word tokens of a help text, `<eos>` after every paragraph."""
    words: list[str] = []
    paragraph: list[str] = []

    def flush():
        if paragraph:
            joined = " ".join(paragraph)
            words.extend(WORD.findall(joined.lower() if lowercase else joined))
            words.append("<eos>")
            paragraph.clear()

    for line in text.splitlines():
        if not line.strip():
            flush()
        elif not UNDERLINE.match(line):
            paragraph.append(line.strip())
    flush()
    return words


def split_topics(tokens: dict[str, list[str]], test_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded split of topic names into (train, test), whole topics only.

    Topics are visited in a seeded order; one joins test when test stays within `test_fraction` of all
    tokens, so test ends up at or just under the fraction (at least one topic on each side).
    """
    names = sorted(tokens)
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed)).tolist()
    target = test_fraction * sum(len(words) for words in tokens.values())
    test: list[str] = []
    held = 0
    for index in order:
        size = len(tokens[names[index]])
        if held + size <= target and len(test) < len(names) - 1:
            test.append(names[index])
            held += size
    if not test:
        test.append(names[order[0]])
    held_out = set(test)
    train = [name for name in names if name not in held_out]
    return train, sorted(test)


def frequency_vocab(words: list[str], vocab_size: int) -> dict[str, int]:
    counts = Counter(word for word in words if word not in ("<unk>", "<eos>"))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:max(0, vocab_size - 2)]
    vocab = {"<unk>": 0, "<eos>": 1}
    for word, _ in ranked:
        vocab[word] = len(vocab)
    return vocab


@register_dataset("text_corpus", options={"vocab_size": {"type": "integer", "minimum": 3}, "bptt": POSITIVE_INT,
                                          "lowercase": {"type": "boolean"}, "test_fraction": OPEN_FRACTION})
def text_corpus(*, seed: int, data_root: str = "data", download: bool = False, vocab_size: int = 2000,
                bptt: int = 35, lowercase: bool = True, test_fraction: float = 0.1, **options) -> Splits:
    """Word-level language modelling on CPython's pydoc topics (embedded, deterministic for a seed)."""
    reject_unknown_options("text_corpus", options, TEXT_OPTIONS)
    vocab_size = positive_int(vocab_size, "vocab_size")
    if vocab_size < 3:
        raise ConfigError(f"config key dataset.options.vocab_size: {vocab_size} is too small (at least 3: "
                          f"<unk>, <eos> and one word)")
    bptt = positive_int(bptt, "bptt")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ConfigError(f"config key dataset.options.test_fraction: {test_fraction!r} is not between 0 and 1")

    topics = corpus_topics()
    tokens = {name: tokenize(text, bool(lowercase)) for name, text in topics.items()}
    train_topics, test_topics = split_topics(tokens, float(test_fraction), seed)
    train_words = [word for name in train_topics for word in tokens[name]]
    test_words = [word for name in test_topics for word in tokens[name]]
    vocab = frequency_vocab(train_words, vocab_size)
    unk = vocab["<unk>"]
    train_ids = torch.tensor([vocab.get(word, unk) for word in train_words], dtype=torch.int64)
    test_ids = torch.tensor([vocab.get(word, unk) for word in test_words], dtype=torch.int64)
    if train_ids.numel() <= bptt or test_ids.numel() <= bptt:
        raise ConfigError(f"config key dataset.options.bptt: {bptt} is longer than the corpus split")
    train_x, train_y = windows(train_ids, bptt)
    test_x, test_y = windows(test_ids, bptt)

    digest = hashlib.sha256("\0".join(f"{k}\0{topics[k]}" for k in sorted(topics)).encode("utf8")).hexdigest()
    info = {
        "source": "pydoc_data.topics", "python": sys.version.split()[0], "corpus_sha256": digest,
        "train_topics": len(train_topics), "test_topics": len(test_topics),
        "train_tokens": int(train_ids.numel()), "test_tokens": int(test_ids.numel()),
        "distinct_train_words": len(set(train_words)), "vocab_size": len(vocab),
        "train_unk_tokens": int((train_ids == unk).sum()), "test_unk_tokens": int((test_ids == unk).sum()),
        "bptt": bptt, "lowercase": bool(lowercase),
    }
    spec = DataSpec("language_model", (bptt,), len(vocab))
    return Splits(train_x, train_y, test_x, test_y, spec, info=info)
