"""Question text -> token states for the focus stage, with a memo of already-encoded strings.

Multiple-choice models read one sequence per option, ``"question option"`` (as the reference
does); open-ended models read the question alone. The text encoder is frozen here, so a string's
token states never change and are encoded once (benchmark questions repeat a lot).

Reference-compatible models (``compat_text_padding``, DESIGN.md §2.1 item 8) read the text as the
reference code feeds it: all strings of one call tokenised together, padded to the longest, never
truncated, and the encoder's float32 states at *every* position, padding included. Their focus
stage adds +1 to padded positions instead of masking them, so the padding states and the padded
length change the answer: what a call encodes together is the batch. Nothing is memoised there.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from glance_focus.encoders import (
    DEFAULT_TEXT_MAX_LENGTH,
    EncoderUnavailableError,
    TextEncoder,
    resolve_device,
    resolve_text_weights,
)
from glance_focus.forksafe import ForkSafeLock


def question_sequences(question: str, options: Sequence[str]) -> list[str]:
    """The text sequences of one question: ``"question option"`` per option, or ``[question]``."""
    if not options:
        return [question]
    return [f"{question} {option}" for option in options]


class TextTooLongError(ValueError):
    """A text sequence has more tokens than the text encoder reads, and this path never truncates."""


class TextFeatureCache:
    """Encodes batches of question sequences with a frozen :class:`TextEncoder`, memoising strings.

    At most ``max_entries`` strings are kept (least recently used evicted), stored in float16.
    With ``keep_padding_states`` (reference-compatible models) every call is encoded as one padded
    batch instead and nothing is memoised (module docstring). Thread-safe.
    """

    def __init__(
        self,
        encoder: TextEncoder,
        max_entries: int = 100_000,
        encode_batch: int = 256,
        keep_padding_states: bool = False,
    ) -> None:
        self.encoder = encoder
        self.max_entries = max_entries
        self.encode_batch = encode_batch
        self.keep_padding_states = keep_padding_states
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

    def _encode_together(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """The reference's text path: ``N`` texts -> (states ``[N, L, H]`` float32 at every position,
        padding ``[N, L]`` bool), L the longest text's token count; :class:`TextTooLongError` when
        it exceeds what the encoder reads (the reference would fail there too)."""
        encoder = self.encoder
        batch = encoder.tokenizer(texts, padding="longest", truncation=False, return_tensors="pt")
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        lengths = attention_mask.sum(dim=1)
        if int(lengths.max()) > encoder.max_length:
            longest = int(lengths.argmax())
            raise TextTooLongError(
                f"The text “{texts[longest][:80]}…” is {int(lengths[longest])} tokens long; "
                f"this model reads at most {encoder.max_length} tokens per question and option."
            )
        with torch.no_grad():  # not inference_mode: training reads these states with autograd on
            hidden = encoder.model(
                input_ids=input_ids.to(encoder.device), attention_mask=attention_mask.to(encoder.device)
            ).last_hidden_state  # (N, L, H)
        return hidden.float().cpu(), attention_mask == 0

    def encode(self, sequences: Sequence[Sequence[str]]) -> tuple[Tensor, Tensor]:
        """B lists of O strings -> (token states ``[B, O, L, H]`` float32, padding ``[B, O, L]`` bool).

        With ``keep_padding_states`` all B x O strings are padded together and the states at padded
        positions are the encoder's; otherwise padded positions hold zeros.
        """
        num_options = {len(s) for s in sequences}
        if len(num_options) != 1:
            raise ValueError(f"every question in a batch needs the same number of sequences, got {num_options}")
        flat = [text for seqs in sequences for text in seqs]
        if self.keep_padding_states:
            hidden, padding = self._encode_together(flat)
            shape = (len(sequences), num_options.pop(), hidden.shape[1])
            return hidden.view(*shape, -1), padding.view(shape)
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


def build_text_encoder_from_config(
    spec: str,
    hf_config: Mapping[str, Any],
    device: torch.device | str = "cpu",
    max_length: int = DEFAULT_TEXT_MAX_LENGTH,
) -> TextEncoder:
    """A text encoder with ``spec``'s tokenizer and an untrained model of the architecture ``hf_config``
    (a Hugging Face config as a dict, ``model_type`` included) to load fine-tuned weights into."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    weights = resolve_text_weights(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(weights.source, local_files_only=weights.local_files_only)
    except OSError as error:
        raise EncoderUnavailableError(f"The tokenizer of text encoder {spec!r} could not be loaded: {error}") from error
    values = dict(hf_config)
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    model = AutoModel.from_config(config, dtype=torch.float32)
    return TextEncoder(spec, model.eval(), tokenizer, resolve_device(device), max_length=max_length)
