"""The training loop behind ``train/train.py`` (supervised and unsupervised, every dataset).

A run directory holds ``run_config.json``, ``metrics.jsonl`` (one JSON object per logged step or
evaluation), TensorBoard events under ``tb/``, ``last/`` (checkpoint + training state, for
resuming) and ``best/`` (the checkpoint with the best validation accuracy). Every checkpoint
write is atomic. Resuming restores model, optimizer, scheduler, step and every RNG state, and
replays the data order, so N steps straight equal k steps + resume + N - k steps.

Runs on CPU, one GPU (bf16/fp16 autocast) or several processes under ``torchrun``
(DistributedDataParallel; gloo on CPU, nccl on GPU).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from glance_focus.batching import QABatch, VideoQADataset, collate_qa
from glance_focus.checkpoint import CheckpointInfo, load_checkpoint, load_training_state, save_checkpoint
from glance_focus.config import GlanceFocusConfig, LossConfig
from glance_focus.data.features import FeatureStore
from glance_focus.data.registry import load_split
from glance_focus.data.types import DatasetSplit
from glance_focus.encoders import load_text_encoder
from glance_focus.evaluation import EvaluationResult, evaluate_split
from glance_focus.extraction import resolve_features
from glance_focus.losses import GlanceFocusCriterion
from glance_focus.model import GlanceFocus
from glance_focus.text_features import TextFeatureCache

LAST = "last"
BEST = "best"


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (saved as ``run_config.json``)."""

    dataset: str
    data: str
    out: str
    model: GlanceFocusConfig
    loss: LossConfig
    train_split: str = "train"
    val_split: str | None = "val"
    features: str | None = None
    """Explicit feature file for every split; default: found per split (see ``resolve_features``)."""
    frame_encoder: str | None = None
    """Encoder whose features to use/record; default: read from the feature file's metadata."""
    text_encoder: str = "minilm"
    text_max_length: int = 64
    num_frames: int = 32
    pseudo_classes: int = 110
    """Unsupervised setting: event classes of the event head (no labels train it; the reference keeps
    110). The supervised setting uses the dataset's own classes."""
    batch_size: int = 64
    """Global batch size (split over processes)."""
    epochs: int = 10
    max_steps: int | None = None
    lr: float = 5e-6
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "constant"
    """``constant`` or ``cosine`` (after warmup)."""
    grad_clip: float | None = None
    eval_every: int = 300
    save_every: int | None = None
    """Steps between ``last/`` checkpoints (default: ``eval_every``)."""
    log_every: int = 20
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    """GPU autocast: ``auto`` (bf16 if supported, else fp16), ``bf16``, ``fp16`` or ``fp32``."""
    num_workers: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["model"] = self.model.to_dict()
        data["loss"] = {**dataclasses.asdict(self.loss), "losses": list(self.loss.losses)}
        return data


# ------------------------------------------------------------------------------------ processes
@dataclass(frozen=True)
class Process:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def start_process(device: str) -> Process:
    """Join the torchrun process group if there is one; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        torch_device = torch.device("cuda", local)
    else:
        torch_device = torch.device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch_device.type == "cuda" else "gloo")
    return Process(rank, world, torch_device)


def _barrier(process: Process) -> None:
    if process.world > 1:
        dist.barrier()


# ------------------------------------------------------------------------------------ data order
def epoch_batches(num_examples: int, batch_size: int, epoch: int, seed: int, process: Process) -> list[list[int]]:
    """This process's batches for ``epoch``: a seeded permutation, sharded over processes.

    Each process gets the same number of batches; the global batch is ``batch_size``.
    """
    per_process = max(1, batch_size // process.world)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(num_examples, generator=generator).tolist()
    usable = (num_examples // process.world) * process.world or num_examples
    shard = order[:usable][process.rank :: process.world]
    return [shard[i : i + per_process] for i in range(0, len(shard), per_process)]


# ------------------------------------------------------------------------------------ RNG state
def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_gauss": [int(np_state[3]), float(np_state[4])],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    has_gauss, gauss = state["numpy_gauss"]
    np.random.set_state(
        ("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], has_gauss, gauss)
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------ pieces
def lr_lambda(config: TrainConfig, total_steps: int):
    def factor(step: int) -> float:
        if config.warmup_steps and step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.schedule == "cosine":
            progress = (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return factor


def autocast_for(device: torch.device, precision: str):
    """bf16/fp16 autocast on GPU; full precision on CPU (training there is numerically safest)."""
    if device.type != "cuda" or precision == "fp32":
        return nullcontext(), None
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    if precision == "auto" and not torch.cuda.is_bf16_supported():
        dtype = torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return torch.autocast("cuda", dtype=dtype), scaler


class JsonlLog:
    """Append-only JSON-lines log; each line is flushed and fsynced so a crash loses at most one line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())


@dataclass
class Experiment:
    """Data, encoders and metadata shared by training and validation."""

    train: DatasetSplit
    train_data: VideoQADataset
    val: DatasetSplit | None
    val_data: VideoQADataset | None
    text: TextFeatureCache
    frame_encoder: str
    frame_encoder_fingerprint: str | None
    model_config: GlanceFocusConfig


def _features_for(config: TrainConfig, split: DatasetSplit) -> FeatureStore:
    if config.features:
        return FeatureStore(config.features)
    path = resolve_features(split, config.frame_encoder)
    if path is None:
        raise FileNotFoundError(
            f"no frame features for {split.name}/{split.split} under {split.root}; "
            "extract them first with train/extract_features.py"
        )
    return FeatureStore(path)


def prepare(config: TrainConfig, device: torch.device) -> Experiment:
    train = load_split(config.dataset, config.data, config.train_split)
    features = _features_for(config, train)
    meta = features.metadata
    text_encoder = load_text_encoder(config.text_encoder, device="cpu", max_length=config.text_max_length)
    if config.loss.setting == "sup" and not train.event_classes:
        raise ValueError(
            f"{config.dataset}/{config.train_split} has no event annotations: train it unsupervised (--setting uns)"
        )
    model_config = dataclasses.replace(
        config.model,
        feature_dim=features.feature_dim,
        num_event_classes=config.pseudo_classes if config.loss.setting == "uns" else len(train.event_classes),
        text_hidden_size=text_encoder.hidden_size,
        task=train.task,
        answer_vocab_size=len(train.answer_vocab or ()) if train.task == "open_ended" else 0,
    )
    q, fmt = model_config.num_memory_prompts, model_config.span_format
    train_data = VideoQADataset(train, features, config.num_frames, q, fmt)
    val = val_data = None
    if config.val_split:
        val = load_split(config.dataset, config.data, config.val_split)
        val_data = VideoQADataset(val, _features_for(config, val), config.num_frames, q, fmt)
    return Experiment(
        train=train,
        train_data=train_data,
        val=val,
        val_data=val_data,
        text=TextFeatureCache(text_encoder, keep_padding_states=model_config.compat_text_padding),
        frame_encoder=config.frame_encoder or meta.get("frame_encoder", "unknown"),
        frame_encoder_fingerprint=meta.get("fingerprint"),
        model_config=model_config,
    )


def feature_statistics(data: VideoQADataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and standard deviation ``[F]`` over every frame of the split's clips."""
    total, total_sq, count = None, None, 0
    for clip_id in sorted({ex.clip_id for ex in data.split.examples}):
        feats = data.features[clip_id].double()  # (T, F)
        total = feats.sum(0) if total is None else total + feats.sum(0)
        total_sq = (feats**2).sum(0) if total_sq is None else total_sq + (feats**2).sum(0)
        count += feats.shape[0]
    assert total is not None and total_sq is not None
    mean = total / count
    std = (total_sq / count - mean**2).clamp(min=0).sqrt()
    return mean.float(), std.float()


def pseudo_class_names(count: int) -> tuple[str, ...]:
    """Names of an unsupervised model's event classes: no label ever named them."""
    return tuple(f"pseudo-class {i}" for i in range(count))


def checkpoint_info(config: TrainConfig, exp: Experiment, metadata: dict[str, Any]) -> CheckpointInfo:
    if config.loss.setting == "uns":
        event_classes = pseudo_class_names(exp.model_config.num_event_classes)
    else:
        event_classes = tuple(exp.train.event_classes)
    return CheckpointInfo(
        model=exp.model_config,
        frame_encoder=exp.frame_encoder,
        frame_encoder_fingerprint=exp.frame_encoder_fingerprint,
        num_frames=config.num_frames,
        text_encoder=config.text_encoder,
        text_max_length=config.text_max_length,
        event_classes=event_classes,
        answer_vocab=tuple(exp.train.answer_vocab) if exp.model_config.task == "open_ended" else None,
        metadata={"dataset": config.dataset, "setting": config.loss.setting, **config.metadata, **metadata},
    )


def _loss(
    model: nn.Module, criterion: GlanceFocusCriterion, batch: QABatch, exp: Experiment, device: torch.device
) -> tuple[torch.Tensor, dict[str, float], float]:
    text_hidden, text_padding = exp.text.encode(batch.sequences)
    out = model(batch.frames, batch.frame_padding, text_hidden.to(device), text_padding.to(device))
    targets = batch.targets if criterion.config.setting == "sup" else None
    loss = criterion(
        out.glance.event_logits,
        out.glance.spans,
        out.focus.answer_logits,
        batch.answers,
        targets,
        prompt_to_frame=out.glance.prompt_to_frame,
        frame_padding=batch.frame_padding,
    )
    accuracy = (out.focus.answer_logits.argmax(-1) == batch.answers).float().mean().item()
    return loss.total, {k: v.item() for k, v in loss.terms.items()}, accuracy


def train(config: TrainConfig) -> EvaluationResult | None:
    """Train (or resume) the run in ``config.out``. Returns the last validation result, if any."""
    process = start_process(config.device)
    out = Path(config.out)
    exp = prepare(config, process.device)
    steps_per_epoch = len(epoch_batches(len(exp.train_data), config.batch_size, 0, config.seed, process))
    total_steps = config.max_steps or steps_per_epoch * config.epochs
    save_every = config.save_every or config.eval_every

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    model = GlanceFocus(exp.model_config)
    if exp.model_config.standardize_features:
        model.set_feature_statistics(*feature_statistics(exp.train_data))
    model.to(process.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config, total_steps))
    autocast, scaler = autocast_for(process.device, config.precision)
    criterion = GlanceFocusCriterion(config.loss, exp.model_config.span_format)

    step, best_accuracy = 0, -1.0
    if (out / LAST / "training_state.pt").is_file():
        step, best_accuracy = _resume(out / LAST, model, optimizer, scheduler, scaler)
    elif process.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "run_config.json").write_text(json.dumps(config.to_json(), indent=2) + "\n")
    _barrier(process)

    wrapped: nn.Module = model
    if process.world > 1:
        wrapped = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[process.device.index] if process.device.type == "cuda" else None,
            find_unused_parameters=True,  # a loss subset (e.g. --losses qa) leaves some heads unused
        )
    log = JsonlLog(out / "metrics.jsonl") if process.main else None
    writer = _tensorboard(out) if process.main else None
    progress = _progress(total_steps, step, process)
    last_eval: EvaluationResult | None = None
    started = time.monotonic()

    for batch in _batches(config, exp, process, step, total_steps, steps_per_epoch):
        model.train()
        batch = batch.to(process.device)
        with autocast:
            loss, terms, accuracy = _loss(wrapped, criterion, batch, exp, process.device)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if config.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        step += 1
        progress.update(1)
        if process.main and (step % config.log_every == 0 or step == total_steps):
            record = {"step": step, "loss": loss.item(), "train_accuracy": accuracy, "lr": scheduler.get_last_lr()[0]}
            record.update({f"loss_{k}": v for k, v in terms.items()})
            _log(log, writer, "train", record)
            progress.set_postfix(loss=f"{loss.item():.3f}", acc=f"{accuracy:.2f}")
        evaluate_now = exp.val_data is not None and (step % config.eval_every == 0 or step == total_steps)
        if evaluate_now:
            if process.main:
                assert exp.val is not None and exp.val_data is not None
                last_eval = evaluate_split(model, exp.val, exp.val_data, exp.text, config.batch_size, process.device)
                summary = last_eval.summary()
                _log(log, writer, "val", {"step": step, **summary})
                if last_eval.accuracy is not None and last_eval.accuracy > best_accuracy:
                    best_accuracy = last_eval.accuracy
                    meta = {"step": step, "val": summary, "train_time_s": round(time.monotonic() - started, 1)}
                    save_checkpoint(out / BEST, model, checkpoint_info(config, exp, meta))
            _barrier(process)
        if step % save_every == 0 or step == total_steps:
            if process.main:
                state = _training_state(optimizer, scheduler, scaler, step, best_accuracy)
                info = checkpoint_info(config, exp, {"step": step})
                save_checkpoint(out / LAST, model, info, training_state=state)
            _barrier(process)
    progress.close()
    if writer is not None:
        writer.close()
    if process.world > 1:
        dist.destroy_process_group()
    return last_eval


def _batches(
    config: TrainConfig, exp: Experiment, process: Process, step: int, total_steps: int, steps_per_epoch: int
) -> Iterator[QABatch]:
    """The remaining batches of the run, starting after ``step`` (the data order is replayed exactly)."""
    while step < total_steps:
        epoch, offset = divmod(step, steps_per_epoch)
        batches = epoch_batches(len(exp.train_data), config.batch_size, epoch, config.seed, process)[offset:]
        batches = batches[: total_steps - step]
        loader = DataLoader(
            exp.train_data,
            batch_sampler=batches,
            collate_fn=collate_qa,
            num_workers=config.num_workers,
            # Its own generator: creating an iterator must not draw from the global RNG (exact resume).
            generator=torch.Generator().manual_seed(config.seed + epoch),
        )
        yield from loader
        step += len(batches)


def _training_state(optimizer, scheduler, scaler, step: int, best_accuracy: float) -> dict[str, Any]:
    state = {
        "step": step,
        "best_accuracy": best_accuracy,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
    }
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    return state


def _resume(directory: Path, model: GlanceFocus, optimizer, scheduler, scaler) -> tuple[int, float]:
    loaded = load_checkpoint(directory, device="cpu")
    if loaded.info.model != model.config:
        raise ValueError(f"{directory} was trained with another model configuration; use a new --out")
    model.load_state_dict(loaded.model.state_dict())
    state = load_training_state(directory)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return int(state["step"]), float(state["best_accuracy"])


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional dependency of the library
        return None
    return SummaryWriter(log_dir=str(out / "tb"))


def _log(log: JsonlLog | None, writer, prefix: str, record: dict[str, Any]) -> None:
    if log is not None:
        log.write({"kind": prefix, "time": time.time(), **record})
    if writer is None:
        return
    for key, value in record.items():
        if isinstance(value, int | float) and key != "step":
            writer.add_scalar(f"{prefix}/{key}", value, record["step"])
        elif isinstance(value, dict):
            for sub, sub_value in value.items():
                if isinstance(sub_value, int | float):
                    writer.add_scalar(f"{prefix}/{key}/{sub}", sub_value, record["step"])


def _progress(total: int, initial: int, process: Process):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not process.main, desc="train", dynamic_ncols=True)
