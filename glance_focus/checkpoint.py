"""Checkpoints on disk: a directory with ``config.json`` and ``model.safetensors``.

``config.json`` holds everything needed to rebuild and use the model: the architecture
(:class:`GlanceFocusConfig`), the frame and text encoders it was trained with (spec and weight
fingerprint), frame sampling, event class names, the answer vocabulary and free-form metadata
(metrics, training command). A fine-tuned text encoder, if any, sits in ``text_encoder.safetensors``.
Loading rebuilds the model from the config and loads the weights strictly. Nothing is unpickled.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from glance_focus.config import GlanceFocusConfig
from glance_focus.model import GlanceFocus
from glance_focus.sampling import FrameSampling, is_clip_encoder

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TEXT_ENCODER_WEIGHTS_NAME = "text_encoder.safetensors"
TRAINING_STATE_NAME = "training_state.pt"
FORMAT_NAME = "glance-focus"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint directory is missing, malformed or does not match its config."""


@dataclass(frozen=True)
class CheckpointInfo:
    """Everything in ``config.json``."""

    model: GlanceFocusConfig
    frame_encoder: str
    """Frame encoder spec ``ARCH:PRETRAINED`` (e.g. ``ViT-B-32:random-seed0``)."""
    frame_encoder_fingerprint: str | None
    num_frames: int
    """Frame feature rows per video the model was trained with (frames, or clips for S3D)."""
    text_encoder: str
    """Text encoder spec (Hugging Face directory or name, or ``minilm``)."""
    text_max_length: int = 64
    text_encoder_config: dict[str, Any] | None = None
    """Hugging Face config of a fine-tuned text encoder stored beside the model, if any."""
    event_classes: tuple[str, ...] = ()
    answer_vocab: tuple[str, ...] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    frame_sampling: FrameSampling | None = None
    """How frames are taken from a video; None means what the frame encoder implies
    (:meth:`FrameSampling.for_encoder`), which is filled in here."""

    def __post_init__(self) -> None:
        if self.frame_sampling is None:
            object.__setattr__(self, "frame_sampling", FrameSampling.for_encoder(self.frame_encoder))
        elif self.frame_sampling.is_clips != is_clip_encoder(self.frame_encoder):
            raise CheckpointError(
                f"frame sampling {self.frame_sampling.kind!r} does not fit the frame encoder {self.frame_encoder!r}"
            )
        if self.event_classes and len(self.event_classes) != self.model.num_event_classes:
            raise CheckpointError(
                f"{len(self.event_classes)} event class names for a model with {self.model.num_event_classes} classes"
            )
        if self.answer_vocab is not None and len(self.answer_vocab) != self.model.answer_vocab_size:
            raise CheckpointError(
                f"answer vocabulary of {len(self.answer_vocab)} for a model with {self.model.answer_vocab_size} answers"
            )

    @property
    def sampling(self) -> FrameSampling:
        """:attr:`frame_sampling`, never None."""
        assert self.frame_sampling is not None  # filled in by __post_init__
        return self.frame_sampling

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "model": self.model.to_dict(),
            "frame_encoder": {"spec": self.frame_encoder, "fingerprint": self.frame_encoder_fingerprint},
            "num_frames": self.num_frames,
            "frame_sampling": self.sampling.to_json(),
            "text_encoder": {
                "spec": self.text_encoder,
                "max_length": self.text_max_length,
                "hf_config": self.text_encoder_config,
            },
            "event_classes": list(self.event_classes),
            "answer_vocab": list(self.answer_vocab) if self.answer_vocab is not None else None,
            "metadata": self.metadata,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckpointInfo:
        if data.get("format") != FORMAT_NAME:
            raise CheckpointError(f"not a {FORMAT_NAME} checkpoint config (format={data.get('format')!r})")
        if data.get("format_version", 0) > FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint format {data['format_version']} is newer than this library ({FORMAT_VERSION})"
            )
        try:
            vocab = data.get("answer_vocab")
            return cls(
                model=GlanceFocusConfig.from_dict(data["model"]),
                frame_encoder=data["frame_encoder"]["spec"],
                frame_encoder_fingerprint=data["frame_encoder"].get("fingerprint"),
                num_frames=int(data["num_frames"]),
                text_encoder=data["text_encoder"]["spec"],
                text_max_length=int(data["text_encoder"].get("max_length", 64)),
                text_encoder_config=data["text_encoder"].get("hf_config"),
                event_classes=tuple(data.get("event_classes") or ()),
                answer_vocab=tuple(vocab) if vocab is not None else None,
                metadata=dict(data.get("metadata") or {}),
                frame_sampling=FrameSampling.from_json(data["frame_sampling"]) if data.get("frame_sampling") else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"malformed checkpoint config: {exc}") from exc


@dataclass
class LoadedCheckpoint:
    model: GlanceFocus
    info: CheckpointInfo
    text_encoder_state: dict[str, Tensor] | None
    path: Path


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def save_checkpoint(
    directory: str | Path,
    model: GlanceFocus,
    info: CheckpointInfo,
    text_encoder_state: dict[str, Tensor] | None = None,
    training_state: dict[str, Any] | None = None,
    text_files: Mapping[str, str] | None = None,
) -> Path:
    """Write ``directory`` atomically: everything goes to a temporary sibling that replaces it at once.

    A crash leaves either the old checkpoint or the new one, never a mixture. ``training_state``
    (optimizer, scheduler, step, RNG states: tensors and plain Python values only) is what a
    training run needs to resume exactly; it is read back with the weights-only unpickler.
    ``text_files`` maps file names to UTF-8 text written beside the weights (a model card).
    """
    if info.model != model.config:
        raise CheckpointError("CheckpointInfo.model differs from the model's own config")
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    for stale in directory.parent.glob(f".{directory.name}.*"):  # left by a writer that was killed
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(staging / WEIGHTS_NAME), metadata={"format": FORMAT_NAME})
        if text_encoder_state is not None:
            text_state = {k: v.detach().cpu().contiguous() for k, v in text_encoder_state.items()}
            save_file(text_state, str(staging / TEXT_ENCODER_WEIGHTS_NAME))
        if training_state is not None:
            torch.save(training_state, staging / TRAINING_STATE_NAME)
        _write_json(staging / CONFIG_NAME, info.to_json())
        for name, text in (text_files or {}).items():
            if Path(name).name != name or name in (CONFIG_NAME, WEIGHTS_NAME):
                raise CheckpointError(f"{name!r} cannot be written beside a checkpoint's own files")
            (staging / name).write_text(text, encoding="utf-8")
        _replace_directory(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def _replace_directory(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``, replacing an existing directory with two renames."""
    if not target.exists():
        os.replace(new, target)
        return
    retired = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, retired)
    try:
        os.replace(new, target)
    except OSError:
        os.replace(retired, target)
        raise
    shutil.rmtree(retired, ignore_errors=True)


HUB_SCHEME = "hf://"
_HUB_CHECKPOINT = re.compile(r"^hf://(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<rev>[\w.-]+))?(?:/(?P<subdir>.+))?$")


def resolve_checkpoint_path(checkpoint: str | Path) -> Path:
    """A local checkpoint directory for ``checkpoint``: a path as given, or ``hf://OWNER/REPO[@REV][/SUBDIR]``.

    A Hub checkpoint is a snapshot of the model repository (only ``SUBDIR`` when given) in the
    Hugging Face cache (``HF_HOME``), downloaded on first use. Where downloads are forbidden
    (``HF_HUB_OFFLINE=1``) or the Hub cannot be reached, the cached snapshot is used, and a repository
    that is not cached raises :class:`CheckpointError` at once.
    """
    text = str(checkpoint)
    if not text.startswith(HUB_SCHEME):
        return Path(checkpoint)
    match = _HUB_CHECKPOINT.match(text.rstrip("/"))
    if match is None:
        raise CheckpointError(f"{text} is not a Hub checkpoint name: expected hf://OWNER/REPO[@REVISION][/SUBDIR]")
    from huggingface_hub import snapshot_download  # only for Hub checkpoints
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    from glance_focus.encoders import hub_offline

    repo, revision, subdir = match["repo"], match["rev"], match["subdir"]
    offline = hub_offline()
    try:
        snapshot = snapshot_download(
            repo,
            revision=revision,
            allow_patterns=f"{subdir}/*" if subdir else None,
            local_files_only=offline,
        )
    except LocalEntryNotFoundError as error:
        why = "HF_HUB_OFFLINE=1 forbids downloads" if offline else "the Hugging Face Hub cannot be reached"
        at = f" at revision {revision}" if revision else ""
        raise CheckpointError(
            f"checkpoint {text}: {repo}{at} is not in the local Hugging Face cache and {why}; "
            f"download it once with network (hf download {repo}{f' --revision {revision}' if revision else ''})"
        ) from error
    except (HfHubHTTPError, ValueError, OSError) as error:  # unknown or private repository, bad revision
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CheckpointError(f"checkpoint {text} cannot be downloaded: {reason}") from error
    path = Path(snapshot) / subdir if subdir else Path(snapshot)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {text}: the repository has no folder {subdir!r}")
    return path


def hub_checkpoint_name(directory: str | Path) -> str | None:
    """``OWNER/REPO[/SUBDIR]`` for a directory inside a Hugging Face cache snapshot
    (``…/models--OWNER--REPO/snapshots/REVISION[/SUBDIR]``), None for any other directory."""
    parts = Path(directory).parts
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == "snapshots" and parts[i - 1].startswith("models--"):
            repo = parts[i - 1].removeprefix("models--").replace("--", "/")
            return "/".join([repo, *parts[i + 2 :]])
    return None


def read_checkpoint_info(directory: str | Path) -> CheckpointInfo:
    """Parse ``directory/config.json`` without loading weights."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a checkpoint: {CONFIG_NAME} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return CheckpointInfo.from_json(data)


def _load_safetensors(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read weights {path}: {exc}") from exc


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the model from ``config.json`` and load ``model.safetensors`` strictly (eval mode)."""
    directory = Path(directory)
    info = read_checkpoint_info(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{directory} is not a checkpoint: {WEIGHTS_NAME} is missing")
    model = GlanceFocus(info.model)
    try:
        model.load_state_dict(_load_safetensors(weights), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"weights in {weights} do not match config.json: {exc}") from exc
    text_path = directory / TEXT_ENCODER_WEIGHTS_NAME
    text_state = _load_safetensors(text_path) if text_path.is_file() else None
    model.to(device).eval()
    return LoadedCheckpoint(model=model, info=info, text_encoder_state=text_state, path=directory)


def load_training_state(directory: str | Path) -> dict[str, Any]:
    """The training state saved beside a checkpoint (weights-only unpickling: no code can run)."""
    path = Path(directory) / TRAINING_STATE_NAME
    if not path.is_file():
        raise CheckpointError(f"{directory} holds no {TRAINING_STATE_NAME}; it cannot resume a training run")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # refusal by the weights-only unpickler, or a corrupt file
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
