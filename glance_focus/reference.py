"""Conversion of checkpoints written by the published reference code (github ByZ0e/Glance-Focus).

The reference saves ``{"model_state_dict": ..., "optimizer_state_dict": ..., ...}`` (``.tar``/``.pth``)
with its own key layout, and keeps the fine-tuned RoBERTa text encoder inside the model under
``transformer.text_encoder.``. :func:`convert_reference_state_dict` maps every key onto this
library's layout (and refuses any key it does not understand); :func:`reference_config` rebuilds the
architecture from the tensor shapes with every reference-compatibility switch on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from glance_focus.checkpoint import CheckpointInfo, save_checkpoint
from glance_focus.config import GlanceFocusConfig
from glance_focus.model import GlanceFocus

MODEL_CARD_NAME = "MODEL_CARD.md"
_TEXT_ENCODER_PREFIX = "transformer.text_encoder."
# Buffers some transformers versions saved in the state dict; they are not parameters.
_IGNORED_TEXT_ENCODER_KEYS = {"embeddings.position_ids"}

_DECODER_NORMS = {
    "norm1": "self_norm",
    "norm2": "event_norm",
    "norm3": "frame_norm",
    "norm4": "ffn_norm",
    "norm5": "focus_norm",
}
_ENCODER_NORMS = {"norm1": "self_norm", "norm2": "ffn_norm"}

# (reference pattern, our replacement); applied in order, first match wins.
_KEY_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^input_proj\.main\.0\.weight_v$"), "input_proj.weight_direction"),
    (re.compile(r"^input_proj\.main\.0\.weight_g$"), "input_proj.weight_scale"),
    (re.compile(r"^input_proj\.main\.0\.bias$"), "input_proj.bias"),
    (re.compile(r"^query_embed\.weight$"), "event_queries.weight"),
    (re.compile(r"^qa_embed\.weight$"), "answer_query.weight"),
    (re.compile(r"^position_embeddings\.weight$"), "prompt_position.weight"),
    (re.compile(r"^event_class_embed\.(weight|bias)$"), r"class_head.\1"),
    (re.compile(r"^span_embed\.layers\.(\d+)\.(weight|bias)$"), r"span_head.layers.\1.\2"),
    (re.compile(r"^answer_head\.((?:\d+\.)?(?:weight|bias))$"), r"answer_head.\1"),
    (re.compile(r"^transformer\.resizer\.fc\.(weight|bias)$"), r"text_proj.fc.\1"),
    (re.compile(r"^transformer\.resizer\.layer_norm\.(weight|bias)$"), r"text_proj.norm.\1"),
    (re.compile(r"^transformer\.decoder\.norm\.(weight|bias)$"), r"decoder.norm.\1"),
    (
        re.compile(
            r"^transformer\.(encoder|decoder)\.layers\.(\d+)\.(self_attn|cross_attn_image)\.in_proj_(weight|bias)$"
        ),
        r"\1.layers.\2.{attn}.in_proj.\4",
    ),
    (
        re.compile(
            r"^transformer\.(encoder|decoder)\.layers\.(\d+)\.(self_attn|cross_attn_image)\.out_proj\.(weight|bias)$"
        ),
        r"\1.layers.\2.{attn}.out_proj.\4",
    ),
    (
        re.compile(r"^transformer\.(encoder|decoder)\.layers\.(\d+)\.(linear[12])\.(weight|bias)$"),
        r"\1.layers.\2.ffn.\3.\4",
    ),
    (
        re.compile(r"^transformer\.(encoder|decoder)\.layers\.(\d+)\.(norm[1-5])\.(weight|bias)$"),
        r"\1.layers.\2.{norm}.\4",
    ),
]


# Our names of weights every reference model has: a state dict without them is something else.
_CORE_KEYS = frozenset({"input_proj.weight_direction", "event_queries.weight", "answer_query.weight"})


class NotAReferenceCheckpointError(ValueError):
    """A file or state dict that is not a checkpoint of the reference code."""


@dataclass(frozen=True)
class ConvertedReference:
    """A reference state dict in this library's layout."""

    model_state: dict[str, Tensor]
    """Keys of :class:`glance_focus.model.GlanceFocus`."""
    text_encoder_state: dict[str, Tensor]
    """Keys of a Hugging Face ``RobertaModel`` (empty if the checkpoint holds no text encoder)."""


def _rename(key: str) -> str | None:
    for pattern, replacement in _KEY_RULES:
        match = pattern.match(key)
        if match is None:
            continue
        new_key = match.expand(replacement)
        if "{attn}" in new_key:
            new_key = new_key.replace("{attn}", "cross_attn" if match.group(3) == "cross_attn_image" else "self_attn")
        if "{norm}" in new_key:
            norms = _ENCODER_NORMS if match.group(1) == "encoder" else _DECODER_NORMS
            if match.group(3) not in norms:
                return None
            new_key = new_key.replace("{norm}", norms[match.group(3)])
        return new_key
    return None


def convert_reference_state_dict(state: dict[str, Tensor]) -> ConvertedReference:
    """Map a reference state dict onto this library's key layout.

    Raises ``ValueError`` naming every key that has no place in the converted model, so nothing
    is silently dropped (the only keys skipped are non-parameter buffers such as
    ``transformer.text_encoder.embeddings.position_ids``).
    """
    model_state: dict[str, Tensor] = {}
    text_state: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        key = key.removeprefix("module.")  # saved from DataParallel / DDP
        if key.startswith(_TEXT_ENCODER_PREFIX):
            text_key = key[len(_TEXT_ENCODER_PREFIX) :]
            if text_key not in _IGNORED_TEXT_ENCODER_KEYS:
                text_state[text_key] = value
            continue
        new_key = _rename(key)
        if new_key is None:
            unknown.append(key)
            continue
        model_state[new_key] = value.reshape(()) if new_key == "input_proj.weight_scale" else value
    missing = sorted(_CORE_KEYS - set(model_state))
    if missing:
        raise NotAReferenceCheckpointError(
            f"not a Glance-Focus reference checkpoint: it has no {', '.join(missing)} "
            f"({len(state)} tensors, e.g. {', '.join(sorted(state)[:3]) or 'none'})"
        )
    if unknown:
        shown = ", ".join(sorted(unknown)[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise ValueError(f"reference checkpoint has {len(unknown)} keys this converter does not understand: {shown}")
    return ConvertedReference(model_state=model_state, text_encoder_state=text_state)


def load_reference_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """Read a reference ``.tar``/``.pth`` (``{"model_state_dict": ...}`` or a bare state dict).

    Uses ``torch.load(weights_only=True)``: a file that needs arbitrary unpickling is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference checkpoint {path} not found")
    try:
        payload: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler's refusal or a corrupt file; its message spans many lines
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise NotAReferenceCheckpointError(
            f"{path} is not a reference checkpoint (the weights-only PyTorch loader refuses it: {reason})"
        ) from exc
    if isinstance(payload, dict) and "model_state_dict" in payload:
        payload = payload["model_state_dict"]
    if not isinstance(payload, dict) or not payload or not all(isinstance(v, Tensor) for v in payload.values()):
        raise NotAReferenceCheckpointError(f"{path} is not a reference checkpoint (no state dict of tensors)")
    return payload


def reference_config(state: dict[str, Tensor], num_heads: int = 8, **overrides: Any) -> GlanceFocusConfig:
    """Architecture of a reference state dict (converted or not), read from its tensor shapes.

    The number of attention heads cannot be read from shapes and is given (reference: 8).
    Every reference-compatibility switch is on; ``span_format`` is "se" as in the reference's
    STAR/AGQA loaders.
    """
    converted = state if "event_queries.weight" in state else convert_reference_state_dict(state).model_state
    num_prompts, d_model = converted["event_queries.weight"].shape

    def count_layers(stack: str) -> int:
        pattern = re.compile(rf"^{stack}\.layers\.(\d+)\.")
        return 1 + max(int(m.group(1)) for k in converted if (m := pattern.match(k)))

    if "answer_head.2.weight" in converted:
        task: dict[str, Any] = {"task": "multiple_choice"}
    else:
        task = {"task": "open_ended", "answer_vocab_size": converted["answer_head.weight"].shape[0]}
    values: dict[str, Any] = {
        "feature_dim": converted["input_proj.weight_direction"].shape[1],
        "d_model": d_model,
        "num_heads": num_heads,
        "ffn_dim": converted["encoder.layers.0.ffn.linear1.weight"].shape[0],
        "num_encoder_layers": count_layers("encoder"),
        "num_decoder_layers": count_layers("decoder"),
        "num_memory_prompts": num_prompts,
        "num_event_classes": converted["class_head.weight"].shape[0] - 1,
        "text_hidden_size": converted["text_proj.fc.weight"].shape[1],
        "span_format": "se",
        **task,
        **overrides,
    }
    return GlanceFocusConfig(**values).reference_compat()


def roberta_config_from_state(text_state: dict[str, Tensor], num_attention_heads: int = 12) -> dict[str, Any]:
    """``transformers.RobertaConfig`` keyword arguments matching a RoBERTa state dict's shapes."""
    layer = re.compile(r"^encoder\.layer\.(\d+)\.")
    vocab, hidden = text_state["embeddings.word_embeddings.weight"].shape
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "num_hidden_layers": 1 + max(int(m.group(1)) for k in text_state if (m := layer.match(k))),
        "num_attention_heads": num_attention_heads,
        "intermediate_size": text_state["encoder.layer.0.intermediate.dense.weight"].shape[0],
        "max_position_embeddings": text_state["embeddings.position_embeddings.weight"].shape[0],
        "type_vocab_size": text_state["embeddings.token_type_embeddings.weight"].shape[0],
    }


def reference_text_limit(hf_config: Mapping[str, Any]) -> int:
    """Most tokens (``<s>``/``</s>`` included) a RoBERTa reads: its position table less the slots
    at and below the padding index, which RoBERTa's position ids skip (514 - 2 = 512 for roberta-base)."""
    return int(hf_config["max_position_embeddings"]) - int(hf_config.get("pad_token_id", 1)) - 1


def _fine_tuned_text_encoder(spec: str, text_state: dict[str, Tensor], text_hidden_size: int) -> dict[str, Any]:
    """The Hugging Face config (as a dict) of ``spec``'s architecture, checked to hold ``text_state``.

    Only ``spec``'s tokenizer and config are read (not its weights); :class:`EncoderUnavailableError`
    where they cannot be had here.
    """
    from transformers import AutoConfig  # heavy: only when needed

    from glance_focus.encoders import EncoderUnavailableError, resolve_text_weights
    from glance_focus.text_features import build_text_encoder_from_config

    weights = resolve_text_weights(spec)
    try:
        hf_config = AutoConfig.from_pretrained(weights.source, local_files_only=weights.local_files_only).to_dict()
    except OSError as error:
        raise EncoderUnavailableError(f"The config of text encoder {spec!r} could not be loaded: {error}") from error
    encoder = build_text_encoder_from_config(spec, hf_config, device="cpu")
    try:
        encoder.model.load_state_dict(text_state, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[-1].strip()
        raise ValueError(f"the checkpoint's fine-tuned text encoder does not fit {spec!r}: {first}") from error
    if encoder.hidden_size != text_hidden_size:
        raise ValueError(f"the model reads {text_hidden_size}-d text tokens but {spec!r} gives {encoder.hidden_size}")
    return hf_config


def convert_reference_to_checkpoint(
    reference: str | Path | Mapping[str, torch.Tensor],
    out_dir: str | Path,
    event_classes: Sequence[str],
    *,
    frame_encoder: str = "unknown",
    frame_encoder_fingerprint: str | None = None,
    text_encoder: str = "minilm",
    text_max_length: int = 64,
    num_frames: int = 80,
    num_heads: int = 8,
    metadata: Mapping[str, Any] | None = None,
    model_card: Callable[[CheckpointInfo], str] | None = None,
) -> Path:
    """Write a checkpoint directory from a reference-code checkpoint (file or state dict).

    The architecture is read from the tensor shapes (every reference-compatibility switch on); the
    number of heads cannot be and is given (reference: 8). ``frame_encoder`` names what made the
    features the model reads (``"unknown"`` for the reference's S3D ``.pth`` files, which
    :func:`~glance_focus.extraction.resolve_features` then accepts). A fine-tuned text encoder inside
    the reference state is stored beside the model with the architecture of ``text_encoder`` (whose
    tokenizer and config are read, not its weights), and ``text_max_length`` becomes the most tokens
    that architecture reads (the reference never truncates). Without one, ``text_encoder``'s width
    must equal the model's ``text_hidden_size``. ``model_card(info)`` gives the text of ``MODEL_CARD.md``.
    """
    if isinstance(reference, str | Path):
        state = load_reference_checkpoint(reference)
        source = str(reference)
    else:
        state, source = dict(reference), "state dict"
    converted = convert_reference_state_dict(state)
    config = reference_config(converted.model_state, num_heads=num_heads)
    model = GlanceFocus(config)
    model.load_state_dict(converted.model_state, strict=True)
    text_state = converted.text_encoder_state or None
    hf_config = None
    if text_state is None:
        from glance_focus.encoders import load_text_encoder  # heavy (transformers): only when needed

        width = load_text_encoder(text_encoder, device="cpu", max_length=text_max_length).hidden_size
        if width != config.text_hidden_size:
            raise ValueError(
                f"the reference model reads {config.text_hidden_size}-d text tokens but {text_encoder!r} gives {width}"
            )
    else:
        hf_config = _fine_tuned_text_encoder(text_encoder, text_state, config.text_hidden_size)
        text_max_length = reference_text_limit(hf_config)
    if len(event_classes) != config.num_event_classes:
        raise ValueError(
            f"{len(event_classes)} event class names given, but the checkpoint predicts "
            f"{config.num_event_classes} event classes (plus background)"
        )
    info = CheckpointInfo(
        model=config,
        frame_encoder=frame_encoder,
        frame_encoder_fingerprint=frame_encoder_fingerprint,
        num_frames=num_frames,
        text_encoder=text_encoder,
        text_max_length=text_max_length,
        text_encoder_config=hf_config,
        event_classes=tuple(event_classes),
        metadata={"converted_from": source, **(metadata or {})},
    )
    files = {MODEL_CARD_NAME: model_card(info)} if model_card is not None else None
    return save_checkpoint(out_dir, model, info, text_encoder_state=text_state, text_files=files)
