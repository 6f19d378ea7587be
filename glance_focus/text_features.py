"""Question text -> token states for the focus stage, with a memo of already-encoded strings.

Multiple-choice models read one sequence per option, ``"question option"`` (as the reference
does); open-ended models read the question alone. The text encoder is frozen here, so a string's
token states never change and are encoded once (benchmark questions repeat a lot).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor

from glance_focus.encoders import TextEncoder
from glance_focus.forksafe import ForkSafeLock


def question_sequences(question: str, options: Sequence[str]) -> list[str]:
    """The text sequences of one question: ``"question option"`` per option, or ``[question]``."""
    if not options:
        return [question]
    return [f"{question} {option}" for option in options]


class TextFeatureCache:
    """Encodes batches of question sequences with a frozen :class:`TextEncoder`, memoising strings.

    At most ``max_entries`` strings are kept (least recently used evicted), stored in float16.
    Thread-safe.
    """

    def __init__(self, encoder: TextEncoder, max_entries: int = 100_000, encode_batch: int = 256) -> None:
        self.encoder = encoder
        self.max_entries = max_entries
        self.encode_batch = encode_batch
        self._memo: OrderedDict[str, Tensor] = OrderedDict()
        self._lock = ForkSafeLock()

    @property
    def hidden_size(self) -> int:
        return self.encoder.hidden_size

    def _encode_missing(self, texts: list[str]) -> dict[str, Tensor]:
        found: dict[str, Tensor] = {}
        with self._lock:
            for text in texts:
                if text in self._memo:
                    self._memo.move_to_end(text)
                    found[text] = self._memo[text]
        missing = sorted(set(texts) - set(found))
        for start in range(0, len(missing), self.encode_batch):
            chunk = missing[start : start + self.encode_batch]
            hidden, padding = self.encoder.encode(chunk)
            lengths = (~padding).sum(1).tolist()
            for text, states, length in zip(chunk, hidden.cpu(), lengths, strict=True):
                found[text] = states[:length].to(torch.float16).clone()
        with self._lock:
            for text in missing:
                self._memo[text] = found[text]
            while len(self._memo) > self.max_entries:
                self._memo.popitem(last=False)
        return found

    def encode(self, sequences: Sequence[Sequence[str]]) -> tuple[Tensor, Tensor]:
        """B lists of O strings -> (token states ``[B, O, L, H]`` float32, padding ``[B, O, L]`` bool)."""
        num_options = {len(s) for s in sequences}
        if len(num_options) != 1:
            raise ValueError(f"every question in a batch needs the same number of sequences, got {num_options}")
        flat = [text for seqs in sequences for text in seqs]
        states = self._encode_missing(flat)
        length = max(states[t].shape[0] for t in flat)
        batch, options = len(sequences), num_options.pop()
        hidden = torch.zeros(batch * options, length, self.hidden_size)
        padding = torch.ones(batch * options, length, dtype=torch.bool)
        for row, text in enumerate(flat):
            tokens = states[text]
            hidden[row, : len(tokens)] = tokens.float()
            padding[row, : len(tokens)] = False
        return hidden.view(batch, options, length, -1), padding.view(batch, options, length)
