"""The embedded stand-ins for the real text and segmentation data: text_corpus, synthetic_segmentation."""

from __future__ import annotations

import pytest
import torch

from batchscale.errors import ConfigError
from batchscale.data import DATASETS, segmentation, text


# --------------------------------------------------------------------------------------------------
# text_corpus


@pytest.fixture(scope="module")
def corpus():
    return DATASETS["text_corpus"].factory(seed=0, data_root="unused", download=False)


def test_tokenize_words_punctuation_and_paragraphs():
    source = "The \"assert\" statement\n**********************\n\nIt's 42, isn't it?\nYes.\n"
    assert text.tokenize(source) == ["the", '"', "assert", '"', "statement", "<eos>",
                                     "it's", "42", ",", "isn't", "it", "?", "yes", ".", "<eos>"]
    assert text.tokenize("Hello World")[:2] == ["hello", "world"]
    assert text.tokenize("Hello World", lowercase=False)[:2] == ["Hello", "World"]


def test_text_corpus_shapes_and_bounds(corpus):
    spec = corpus.spec
    assert spec.task == "language_model" and spec.input_shape == (35,) and spec.num_classes == 2000
    for x, y in ((corpus.train_x, corpus.train_y), (corpus.test_x, corpus.test_y)):
        assert x.dtype == torch.int64 and y.dtype == torch.int64 and x.shape == y.shape and x.shape[1] == 35
        assert int(x.min()) >= 0 and int(x.max()) < spec.num_classes and int(y.max()) < spec.num_classes
        # y is x shifted by one token, windows are consecutive and do not overlap
        assert torch.equal(x[:, 1:], y[:, :-1])
        assert torch.equal(x[1:, 0], y[:-1, -1])
    info = corpus.info
    assert info["vocab_size"] == 2000 and info["distinct_train_words"] > 2000
    assert corpus.train_x.numel() <= info["train_tokens"] < corpus.train_x.numel() + 36
    assert corpus.test_x.numel() <= info["test_tokens"] < corpus.test_x.numel() + 36
    assert info["train_tokens"] > 50_000 and 0 < info["test_tokens"] <= 0.1 * (info["train_tokens"] + info["test_tokens"])
    assert 0 < info["test_unk_tokens"] < info["test_tokens"] * 0.2  # <unk> (id 0) is rare but present
    assert int((corpus.train_x == 1).sum()) > 100  # <eos> ends every paragraph


def test_text_corpus_is_deterministic(corpus):
    again = DATASETS["text_corpus"].factory(seed=0, data_root="unused", download=False)
    assert torch.equal(corpus.train_x, again.train_x) and torch.equal(corpus.test_y, again.test_y)
    other = DATASETS["text_corpus"].factory(seed=1, data_root="unused", download=False)
    assert other.info["test_tokens"] != corpus.info["test_tokens"] or not torch.equal(other.test_x, corpus.test_x)


def test_text_corpus_split_by_topic_without_leakage():
    tokens = {name: text.tokenize(body) for name, body in text.corpus_topics().items()}
    train, test = text.split_topics(tokens, 0.1, seed=3)
    assert set(train).isdisjoint(test) and set(train) | set(test) == set(tokens)
    assert len(test) >= 1 and len(train) >= 1
    assert text.split_topics(tokens, 0.1, seed=3) == (train, test)


def test_text_corpus_options():
    small = DATASETS["text_corpus"].factory(seed=0, data_root="unused", download=False, vocab_size=50, bptt=8)
    assert small.spec.num_classes == 50 and small.spec.input_shape == (8,)
    assert int(small.train_x.max()) < 50 and int(small.test_y.max()) < 50
    assert small.info["train_unk_tokens"] > 0.2 * small.info["train_tokens"]
    cased = DATASETS["text_corpus"].factory(seed=0, data_root="unused", download=False, lowercase=False)
    lower = DATASETS["text_corpus"].factory(seed=0, data_root="unused", download=False)
    assert cased.info["distinct_train_words"] > lower.info["distinct_train_words"]
    with pytest.raises(ConfigError, match="dataset.options.vocab_size"):
        DATASETS["text_corpus"].factory(seed=0, data_root="unused", download=False, vocab_size=2)
    with pytest.raises(ConfigError, match="dataset.options.test_fraction"):
        DATASETS["text_corpus"].factory(seed=0, data_root="unused", download=False, test_fraction=1.5)
    with pytest.raises(ConfigError, match="dataset.options.vocab: not an option"):
        DATASETS["text_corpus"].factory(seed=0, data_root="unused", download=False, vocab=10)


def test_text_corpus_is_not_a_real_dataset():
    entry = DATASETS["text_corpus"]
    assert not entry.real and entry.check is None


# --------------------------------------------------------------------------------------------------
# synthetic_segmentation


def make_segmentation(**options):
    options = {"n_train": 200, "n_test": 50, **options}
    return DATASETS["synthetic_segmentation"].factory(seed=options.pop("seed", 0), data_root="unused",
                                                      download=False, **options)


@pytest.fixture(scope="module")
def shapes():
    return make_segmentation()


def test_segmentation_shapes_and_dtypes(shapes):
    spec = shapes.spec
    assert spec.task == "segmentation" and spec.input_shape == (3, 32, 32)
    assert spec.num_classes == 4 and spec.ignore_index == 255
    assert shapes.train_x.shape == (200, 3, 32, 32) and shapes.train_x.dtype == torch.uint8
    assert shapes.train_y.shape == (200, 32, 32) and shapes.train_y.dtype == torch.int64
    assert shapes.test_x.shape == (50, 3, 32, 32) and shapes.test_y.shape == (50, 32, 32)
    assert len(shapes.mean) == 3 and len(shapes.std) == 3
    assert all(0 < m < 1 for m in shapes.mean) and all(0 < s < 1 for s in shapes.std)
    values = set(torch.unique(torch.cat([shapes.train_y.flatten(), shapes.test_y.flatten()])).tolist())
    assert values == {0, 1, 2, 3, 255}


def test_segmentation_is_deterministic(shapes):
    again = make_segmentation()
    assert torch.equal(shapes.train_x, again.train_x) and torch.equal(shapes.train_y, again.train_y)
    assert torch.equal(shapes.test_x, again.test_x) and torch.equal(shapes.test_y, again.test_y)
    other = make_segmentation(seed=1)
    assert not torch.equal(shapes.train_x, other.train_x)
    assert not torch.equal(shapes.train_x[:50], shapes.test_x)  # test images are new draws


def test_segmentation_ignore_pixels(shapes):
    ignored = shapes.train_y == 255
    assert 0.01 < float(ignored.double().mean()) < 0.25
    # the ignore draw comes last, so other ignore fractions give the same images and labels: ignored
    # pixels are exactly (all of them, with 1.0) the pixels with a 4-neighbour of another label
    unmasked = make_segmentation(ignore_fraction=0.0)
    assert torch.equal(unmasked.train_x, shapes.train_x) and int((unmasked.train_y == 255).sum()) == 0
    border = segmentation._border(unmasked.train_y)
    assert bool(border[ignored].all())
    assert torch.equal(shapes.train_y[~ignored], unmasked.train_y[~ignored])
    assert torch.equal(make_segmentation(ignore_fraction=1.0).train_y == 255, border)


def test_segmentation_class_balance(shapes):
    labelled = shapes.train_y[shapes.train_y != 255]
    share = torch.bincount(labelled, minlength=4).double() / labelled.numel()
    assert 0.4 < float(share[0]) < 0.9  # background is the largest class but not everything
    assert all(0.02 < float(s) < 0.3 for s in share[1:])
    images_with_foreground = ((shapes.train_y > 0) & (shapes.train_y < 255)).flatten(1).any(1)
    assert bool(images_with_foreground.all())  # every image has at least one shape


def test_segmentation_options():
    big = make_segmentation(size=48, num_classes=7, n_train=20, n_test=5, noise=0.0)
    assert big.train_x.shape == (20, 3, 48, 48) and big.spec.num_classes == 7
    assert int(big.train_y[big.train_y != 255].max()) <= 6
    # with no noise the pixels of one shape class are close to its base colour
    palette = (segmentation.class_colours(7) * 255).round()
    pixels = big.train_x.permute(0, 2, 3, 1)[big.train_y == 1].double()
    if pixels.numel():
        assert float((pixels - palette[1]).abs().max()) <= 0.08 * 255 + 1
    with pytest.raises(ConfigError, match="dataset.options.num_classes"):
        make_segmentation(num_classes=1)
    with pytest.raises(ConfigError, match="dataset.options.ignore_fraction"):
        make_segmentation(ignore_fraction=2)
    with pytest.raises(ConfigError, match="dataset.options.classes: not an option"):
        make_segmentation(classes=3)
