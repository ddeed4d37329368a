"""An LSTM language model, sized like PyTorch's examples/word_language_model ("medium": 2x650, dropout 0.5).

Input: int64 tokens (B, T). Output: next-token logits (B, T, V), V = spec.num_classes.

Truncated backpropagation through time, the simple way: every example is an independent window of T
tokens and the hidden state starts at zero in each window (nothing is carried from one batch to the next).
That makes examples exchangeable, which the batch-size study needs: a batch of B windows is B i.i.d.
samples whatever B is, and shuffling never breaks a carried state. The price is that the first tokens of a
window are predicted with little context, so perplexities are somewhat higher than with carried state.
"""

from __future__ import annotations

from torch import nn

from batchscale.data import DataSpec
from batchscale.models import register_model
from batchscale.spec.options import DROPOUT, POSITIVE, POSITIVE_INT


def _scaled(size: int, width: float) -> int:
    return max(1, int(round(size * width)))


class LSTMLanguageModel(nn.Module):
    """embedding -> dropout -> stacked LSTM (dropout between layers) -> dropout -> linear decoder."""

    def __init__(self, vocab: int, embedding_dim: int, hidden: int, layers: int, dropout: float,
                 tie_weights: bool):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(vocab, embedding_dim)
        # nn.LSTM applies `dropout` to the outputs of every layer but the last
        self.rnn = nn.LSTM(embedding_dim, hidden, layers, dropout=dropout if layers > 1 else 0.0,
                           batch_first=True)
        self.decoder = nn.Linear(hidden, vocab)
        if tie_weights:
            # Press & Wolf 2017 / Inan et al. 2017: the decoder reuses the embedding matrix (one tensor)
            if embedding_dim != hidden:
                raise ValueError(f"tie_weights needs embedding_dim == hidden, got {embedding_dim} != {hidden}")
            self.decoder.weight = self.encoder.weight
        # the word_language_model initialisation: small uniform embedding/decoder, zero decoder bias
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        if not tie_weights:
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(self, tokens):
        x = self.drop(self.encoder(tokens))  # (B, T, E)
        x, _ = self.rnn(x)  # no initial state given: zeros, i.e. every window starts fresh
        return self.decoder(self.drop(x))  # (B, T, V)


@register_model("lstm", options={"layers": POSITIVE_INT, "hidden": POSITIVE_INT, "embedding_dim": POSITIVE_INT,
                                 "dropout": DROPOUT, "width": POSITIVE})
def lstm(spec: DataSpec, layers: int = 2, hidden: int = 650, embedding_dim: int = 650, dropout: float = 0.5,
         tie_weights: bool = False, width: float = 1.0) -> nn.Module:
    if spec.task != "language_model":
        raise ValueError(f"lstm is a language model; the dataset's task is {spec.task!r}")
    if tie_weights and embedding_dim != hidden:  # checked before scaling, where the user set the numbers
        raise ValueError(f"tie_weights needs embedding_dim == hidden, got {embedding_dim} != {hidden}")
    return LSTMLanguageModel(spec.num_classes, _scaled(embedding_dim, width), _scaled(hidden, width), layers,
                             dropout, tie_weights)
