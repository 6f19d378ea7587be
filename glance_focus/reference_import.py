"""Import a checkpoint of the reference code (github ByZ0e/Glance-Focus) as a normal checkpoint
directory that the app, ``train/evaluate.py`` and the Inspect tab load like any other.

:func:`import_reference_checkpoint` reads the ``.tar``/``.pth`` (weights-only), checks that the
frame encoder gives the feature width the model reads and that the text encoder's tokenizer and
config are here, and writes ``config.json``, ``model.safetensors``, the fine-tuned text encoder
(``text_encoder.safetensors``) and ``MODEL_CARD.md`` (origin, features, sampling, the reference
behaviours kept). The conversion itself is :mod:`glance_focus.reference`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from glance_focus.checkpoint import CheckpointInfo
from glance_focus.config import GlanceFocusConfig
from glance_focus.data.star import read_action_mapping
from glance_focus.encoders import EncoderUnavailableError, load_frame_encoder
from glance_focus.reference import (
    convert_reference_state_dict,
    convert_reference_to_checkpoint,
    load_reference_checkpoint,
    reference_config,
)

REFERENCE_REPOSITORY = "https://github.com/ByZ0e/Glance-Focus"
REFERENCE_NUM_FRAMES = 80
"""Frame features per video the reference's STAR loader gives the model."""


class FrameFeatureMismatchError(ValueError):
    """The frame encoder does not give the feature width the checkpoint reads."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def import_reference_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    frame_encoder: str,
    text_encoder: str,
    action_mapping: str | Path,
    dataset: str = "star",
    num_heads: int = 8,
    num_frames: int = REFERENCE_NUM_FRAMES,
) -> Path:
    """Write ``out_dir`` from the reference checkpoint file ``checkpoint``.

    Args:
        frame_encoder: the spec of the encoder that made the model's training features
            (``S3D:PATH`` or ``S3D:howto100m`` for the released STAR model); its output width must
            be the model's input width.
        text_encoder: the spec whose tokenizer and config fit the fine-tuned text encoder inside the
            checkpoint (``roberta-base``); its weights are not read.
        action_mapping: the dataset's ``action_mapping.txt`` (event class names, one per line).
        num_heads: attention heads (not readable from shapes; the reference uses 8).

    Raises:
        NotAReferenceCheckpointError, FrameFeatureMismatchError, EncoderUnavailableError (all with
        one-line messages), ValueError for any other mismatch.
    """
    checkpoint = Path(checkpoint)
    state = load_reference_checkpoint(checkpoint)
    config = reference_config(convert_reference_state_dict(state).model_state, num_heads=num_heads)
    classes = read_action_mapping(Path(action_mapping))
    encoder = load_frame_encoder(frame_encoder, device="cpu", precision="fp32")
    if encoder.feature_dim != config.feature_dim:
        raise FrameFeatureMismatchError(
            f"the checkpoint reads {config.feature_dim}-d frame features but {frame_encoder} gives "
            f"{encoder.feature_dim}-d ones: give the encoder its training features came from"
            + (" (S3D:PATH or S3D:howto100m for 1024-d S3D features)" if config.feature_dim == 1024 else "")
        )
    source_sha256 = file_sha256(checkpoint)
    try:
        return convert_reference_to_checkpoint(
            state,
            out_dir,
            classes,
            frame_encoder=str(encoder.spec),
            frame_encoder_fingerprint=encoder.fingerprint,
            text_encoder=text_encoder,
            num_frames=num_frames,
            num_heads=num_heads,
            metadata={
                "dataset": dataset,
                "source": {"file": checkpoint.name, "sha256": source_sha256, "code": REFERENCE_REPOSITORY},
            },
            model_card=lambda info: model_card(info, checkpoint.name, source_sha256),
        )
    except EncoderUnavailableError as error:
        why = str(error).split(". ")[0].rstrip(".")  # its hints are about encoders to compute with
        raise EncoderUnavailableError(
            f"{why}. The importer reads only the text encoder's tokenizer and config (the fine-tuned weights are "
            f"in the checkpoint): fetch them once with network (`hf download {text_encoder} config.json vocab.json "
            "merges.txt tokenizer.json`) or give a local directory holding them."
        ) from error


def _kept_behaviours(config: GlanceFocusConfig) -> list[str]:
    """The reference-code behaviours (DESIGN.md §2.1) this model keeps, one line each."""
    lines = []
    if config.compat_event_memory_slice:
        lines.append(
            f'the focus stage\'s "event memory" is the last {config.compat_event_memory_size} encoded positions '
            "(text positions, often padding), not the memory prompts"
        )
    if config.compat_float_masks:
        lines.append("no attention masks: +1 on every visual and padded-text attention logit, 0 on real text tokens")
    if config.compat_answer_from_first_layer:
        lines.append("the answer is read from the first focus decoder layer (the plots show that layer's maps)")
    if config.share_mla_attention:
        lines.append("one cross-attention module serves the glance step and all three focus steps")
    if config.temporal_position == "none":
        lines.append("no temporal position encoding on frame tokens (spans come from content only)")
    if config.compat_text_padding:
        lines.append(
            'text path: `question + " " + option`, the strings of a batch padded to the longest, never '
            "truncated; the text encoder's float32 states at every position, padding included, reach the focus stage"
        )
    lines.append(f"predicted spans are read as {'(start, end)' if config.span_format == 'se' else '(center, width)'}")
    lines.append(
        "every video is run once per answer option in the reference; here the glance stage runs once per video"
    )
    return lines


def _sampling(info: CheckpointInfo) -> str:
    text = info.sampling.describe(info.num_frames)
    if info.sampling.is_clips:
        text += (
            f" (the reference STAR loader's rule: zero rows appended below {info.num_frames}"
            + (", not masked as in the reference" if info.model.compat_float_masks else "")
            + f"; rows floor(j * n / {info.num_frames}) of longer videos)"
        )
    return text


def _architecture(config: GlanceFocusConfig) -> str:
    return (
        f"D {config.d_model}, {config.num_heads} heads, FFN {config.ffn_dim}, {config.num_encoder_layers} encoder + "
        f"{config.num_decoder_layers} decoder layers, {config.num_memory_prompts} memory prompts, "
        f"{config.num_event_classes} event classes + background, {config.task.replace('_', '-')}"
    )


def _text(info: CheckpointInfo) -> str:
    hf = info.text_encoder_config
    stored = (
        f"the {hf.get('model_type', '')} text encoder fine-tuned with the model ({hf.get('hidden_size')}-d tokens), "
        "stored in `text_encoder.safetensors`"
        if hf is not None
        else f"`{info.text_encoder}` as published"
    )
    return (
        f"{stored}; tokenizer of `{info.text_encoder}`; at most {info.text_max_length} tokens per question and "
        "option (longer texts are refused, never truncated)"
    )


def model_card(info: CheckpointInfo, source_name: str, source_sha256: str) -> str:
    """``MODEL_CARD.md`` of an imported reference checkpoint."""
    config = info.model
    kept = "\n".join(f"- {line}" for line in _kept_behaviours(config))
    dataset = info.metadata.get("dataset", "star")
    return f"""# Glance-Focus imported from the reference code

## Origin
- Converted from `{source_name}` (sha256 `{source_sha256}`), a checkpoint written by the authors' reference
  implementation ({REFERENCE_REPOSITORY}); every weight was mapped onto this library's layout and loaded strictly.
- Architecture read from the weights: {_architecture(config)};
  event classes from the {dataset} `action_mapping.txt`.
- Accuracy is not measured here: run `train/evaluate.py --checkpoint THIS_DIR --data DATA --split val`.

## Features
- Frames: `{info.frame_encoder}`, {config.feature_dim}-d, weights fingerprint `{info.frame_encoder_fingerprint}`
  (loading refuses other weights).
- Frame sampling: {_sampling(info)}.
- Text: {_text(info)}.

## Reference behaviours kept
These differ from the paper and change the answers; they are kept so that the answers are the reference code's:
{kept}

## Batching policy
In the reference, padded text positions are attended to (+1) instead of masked, so an answer depends on how many
padding tokens its options get, that is on which strings share a padded batch. **The app answers one question per
padded batch**: a question's options are tokenised together and padded to the longest of them. `train/evaluate.py`
pads each batch of `--batch-size` questions together (default 64, in file order, as the reference's evaluation
loop), and so does the Inspect tab (64); `--batch-size 1` gives the app's answers.
"""
