"""The S3D-G visual tower of the HowTo100M MIL-NCE model, and the frame encoder built on it.

Architecture (Xie et al., *Rethinking Spatiotemporal Feature Learning*, ECCV 2018, "S3D-G";
trained on HowTo100M by Miech et al., CVPR 2020): a space-to-depth stem, separable 3-D
convolutions (a ``1×k×k`` spatial conv then a ``k×1×1`` temporal conv, each followed by
BatchNorm and ReLU), nine Inception blocks whose branches are each re-weighted by a learned
self-gating, and TensorFlow-"SAME" max pooling. Module and parameter names follow the
released ``s3d_howto100m.pth`` so its visual weights load strictly (the text branch in that
file is ignored).

The feature Glance-Focus consumes is ``mixed_5c``: the Mixed_5c output averaged over time,
height and width, 1024-d, one per clip of 16 frames (1 s at 16 fps). ``video_embedding``
(``fc`` of it, 512-d) is the joint text-video space of MIL-NCE, kept for parity checks.

Input clips are RGB in ``[0, 1]`` with no mean/std normalisation, ``[B, 3, T, H, W]`` with
``T``, ``H``, ``W`` even (the space-to-depth stem folds 2×2×2 blocks into channels).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glance_focus.encoders import (
    EncoderFingerprintError,
    EncoderUnavailableError,
    FrameEncoderSpec,
    Precision,
    _autocast,
    _exact_uniform_,
    _frames_tensor,
    _host_reachable,
    _read_state_dict,
    hub_offline,
    weights_fingerprint,
)
from glance_focus.video import center_crop_offsets, clip_resize_size

ARCH = "S3D"
FEATURE_DIM = 1024
EMBEDDING_DIM = 512
HOWTO100M_TAG = "howto100m"
HOWTO100M_URL = "https://www.rocq.inria.fr/cluster-willow/amiech/howto100m/s3d_howto100m.pth"
"""The HowTo100M S3D release by Antoine Miech (github antoine77340/S3D_HowTo100M, README)."""
HOWTO100M_FILE = "s3d_howto100m.pth"
TEXT_BRANCH_PREFIX = "text_module."
CLIP_FRAMES = 16
"""Frames per clip: one clip per second of video decoded at 16 fps."""
INPUT_SIZE = 224
"""Clip height and width after the short-side resize and centre crop."""
DEFAULT_CLIP_BATCH = 32
"""Clips per forward on an accelerator (the VideoQA extraction's batch; the output does not depend on it)."""
CPU_CLIP_BATCH = 8
"""Clips per forward on CPU at most: activations take ~0.13 GB per clip (peak RSS 1.5 GB at 8 clips,
~4 GB at 32)."""

STAGES = (
    "conv1",
    "maxpool_2a",
    "conv_2b",
    "conv_2c",
    "gating",
    "maxpool_3a",
    "mixed_3b",
    "mixed_3c",
    "maxpool_4a",
    "mixed_4b",
    "mixed_4c",
    "mixed_4d",
    "mixed_4e",
    "mixed_4f",
    "maxpool_5a",
    "mixed_5b",
    "mixed_5c",
)
"""Submodules in the order the forward calls them (the names of :attr:`S3DOutput.stages`)."""

_INCEPTION_WIDTHS: dict[str, tuple[int, int, int, int, int, int]] = {
    # name: (branch 0, branch 1 bottleneck, branch 1, branch 2 bottleneck, branch 2, branch 3)
    "mixed_3b": (64, 96, 128, 16, 32, 32),
    "mixed_3c": (128, 128, 192, 32, 96, 64),
    "mixed_4b": (192, 96, 208, 16, 48, 64),
    "mixed_4c": (160, 112, 224, 24, 64, 64),
    "mixed_4d": (128, 128, 256, 24, 64, 64),
    "mixed_4e": (112, 144, 288, 32, 64, 64),
    "mixed_4f": (256, 160, 320, 32, 128, 128),
    "mixed_5b": (256, 160, 320, 32, 128, 128),
    "mixed_5c": (384, 192, 384, 48, 128, 128),
}


def _triple(value: int | tuple[int, int, int]) -> tuple[int, int, int]:
    return (value, value, value) if isinstance(value, int) else value


class ConvBNReLU3d(nn.Module):
    """``Conv3d`` (no bias) → ``BatchNorm3d`` → ReLU; with ``separable`` and a temporal extent > 1,
    a spatial ``1×k×k`` unit followed by a temporal ``k×1×1`` unit (``conv2``/``bn2``).

    ``[B, C_in, T, H, W]`` → ``[B, C_out, T', H', W']``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int | tuple[int, int, int],
        stride: int = 1,
        padding: int | tuple[int, int, int] = 0,
        separable: bool = False,
    ) -> None:
        super().__init__()
        kt, kh, kw = _triple(kernel)
        pt, ph, pw = _triple(padding)
        self.separable = separable and kt > 1
        if self.separable:
            self.conv1 = nn.Conv3d(
                in_channels, out_channels, (1, kh, kw), stride=(1, stride, stride), padding=(0, ph, pw), bias=False
            )
            self.bn1 = nn.BatchNorm3d(out_channels)
            self.conv2 = nn.Conv3d(
                out_channels, out_channels, (kt, 1, 1), stride=(stride, 1, 1), padding=(pt, 0, 0), bias=False
            )
            self.bn2 = nn.BatchNorm3d(out_channels)
        else:
            self.conv1 = nn.Conv3d(
                in_channels, out_channels, (kt, kh, kw), stride=stride, padding=(pt, ph, pw), bias=False
            )
            self.bn1 = nn.BatchNorm3d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        if self.separable:
            x = F.relu(self.bn2(self.conv2(x)))
        return x


class SelfGating(nn.Module):
    """Scale each channel by ``sigmoid(fc(mean over T, H, W))``: ``[B, C, T, H, W]`` → same shape."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        weights = torch.sigmoid(self.fc(x.mean(dim=(2, 3, 4))))  # (B, C)
        return x * weights[:, :, None, None, None]


class SamePadMaxPool3d(nn.Module):
    """Max pooling with TensorFlow's "SAME" padding: zeros are added, ``max(k - s, 0)`` per axis
    (the smaller half in front), then ``ceil_mode`` pooling keeps the last partial window."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        pads: list[int] = []
        for k, s in zip(reversed(kernel), reversed(stride), strict=True):  # F.pad wants W, H, T order
            along = max(k - s, 0)
            pads += [along // 2, along - along // 2]
        self.pads = tuple(pads)
        self.pool = nn.MaxPool3d(kernel, stride, ceil_mode=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(F.pad(x, self.pads, value=0.0))


class InceptionBlock(nn.Module):
    """Four gated branches concatenated on channels: 1×1×1; 1×1×1 → separable 3³; 1×1×1 →
    separable 3³; 3³ max pool (stride 1) → 1×1×1. ``[B, C_in, T, H, W]`` → ``[B, C_out, T, H, W]``."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3b = widths
        self.conv_b0 = ConvBNReLU3d(in_channels, b0, 1)
        self.conv_b1_a = ConvBNReLU3d(in_channels, b1a, 1)
        self.conv_b1_b = ConvBNReLU3d(b1a, b1b, 3, padding=1, separable=True)
        self.conv_b2_a = ConvBNReLU3d(in_channels, b2a, 1)
        self.conv_b2_b = ConvBNReLU3d(b2a, b2b, 3, padding=1, separable=True)
        self.maxpool_b3 = nn.MaxPool3d(3, stride=1, padding=1)
        self.conv_b3_b = ConvBNReLU3d(in_channels, b3b, 1)
        self.gating_b0 = SelfGating(b0)
        self.gating_b1 = SelfGating(b1b)
        self.gating_b2 = SelfGating(b2b)
        self.gating_b3 = SelfGating(b3b)
        self.out_channels = b0 + b1b + b2b + b3b

    def forward(self, x: Tensor) -> Tensor:
        branches = (
            self.gating_b0(self.conv_b0(x)),
            self.gating_b1(self.conv_b1_b(self.conv_b1_a(x))),
            self.gating_b2(self.conv_b2_b(self.conv_b2_a(x))),
            self.gating_b3(self.conv_b3_b(self.maxpool_b3(x))),
        )
        return torch.cat(branches, dim=1)


class S3DOutput(NamedTuple):
    """What :meth:`S3D.forward` returns."""

    mixed_5c: Tensor
    """``[B, 1024]``: Mixed_5c averaged over time, height and width (the VideoQA feature)."""
    video_embedding: Tensor
    """``[B, 512]``: ``fc(mixed_5c)``, the joint text-video space."""
    stages: dict[str, Tensor] | None
    """With ``return_stages``: every stage's full output, keyed by :data:`STAGES` (``conv1`` before
    the stem's one-step crop); else None."""


def space_to_depth(x: Tensor) -> Tensor:
    """Fold each 2×2×2 block of ``[B, C, T, H, W]`` into channels: ``[B, 8C, T/2, H/2, W/2]``.

    Channel ``((dt * 2 + dh) * 2 + dw) * C + c`` of the output holds input channel ``c`` at
    offset ``(dt, dh, dw)`` inside its block.
    """
    b, c, t, h, w = x.shape
    if t % 2 or h % 2 or w % 2:
        raise ValueError(f"S3D needs an even number of frames, height and width; got T={t}, H={h}, W={w}")
    x = x.view(b, c, t // 2, 2, h // 2, 2, w // 2, 2)
    x = x.permute(0, 3, 5, 7, 1, 2, 4, 6)  # (B, dt, dh, dw, C, T/2, H/2, W/2)
    return x.reshape(b, 8 * c, t // 2, h // 2, w // 2)


class S3D(nn.Module):
    """The S3D-G visual tower: clips ``[B, 3, T, H, W]`` in ``[0, 1]`` → :class:`S3DOutput`."""

    def __init__(self, embedding_dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        # The stem sees space-to-depth input (24 = 8 × RGB); a 2×4×4 kernel there covers a 4×8×8
        # input neighbourhood. Its padding is one step too generous in front; forward crops it.
        self.conv1 = ConvBNReLU3d(24, 64, (2, 4, 4), padding=(1, 2, 2))
        self.maxpool_2a = SamePadMaxPool3d((1, 3, 3), (1, 2, 2))
        self.conv_2b = ConvBNReLU3d(64, 64, 1)
        self.conv_2c = ConvBNReLU3d(64, 192, 3, padding=1, separable=True)
        self.gating = SelfGating(192)
        self.maxpool_3a = SamePadMaxPool3d((1, 3, 3), (1, 2, 2))
        self.maxpool_4a = SamePadMaxPool3d((3, 3, 3), (2, 2, 2))
        self.maxpool_5a = SamePadMaxPool3d((2, 2, 2), (2, 2, 2))
        channels = 192
        for name, widths in _INCEPTION_WIDTHS.items():
            block = InceptionBlock(channels, widths)
            self.add_module(name, block)
            channels = block.out_channels
        self.fc = nn.Linear(channels, embedding_dim)

    def forward(self, clips: Tensor, return_stages: bool = False) -> S3DOutput:
        """``clips [B, 3, T, H, W]`` (T, H, W even) → pooled Mixed_5c ``[B, 1024]`` and its embedding."""
        stages: dict[str, Tensor] = {}
        x = self.conv1(space_to_depth(clips))  # (B, 64, T/2 + 1, H/2 + 1, W/2 + 1)
        if return_stages:
            stages["conv1"] = x
        x = x[:, :, 1:, 1:, 1:]  # (B, 64, T/2, H/2, W/2)
        for name in STAGES[1:]:
            x = getattr(self, name)(x)
            if return_stages:
                stages[name] = x
        pooled = x.mean(dim=(2, 3, 4))  # (B, 1024)
        return S3DOutput(pooled, self.fc(pooled), stages if return_stages else None)


# ----------------------------------------------------------------------------------------------
# Weights: released file, seeded initialisation, fingerprint
# ----------------------------------------------------------------------------------------------


def _is_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def load_s3d_state(model: S3D, state: dict[str, Tensor], source: str) -> None:
    """Load a visual state dict into ``model`` strictly, ignoring the text branch.

    ``text_module.*`` entries are dropped; BatchNorm ``num_batches_tracked`` counters (unused in
    eval mode, absent from some copies of the released file) are optional. Any other missing or
    unexpected key, or a shape mismatch, raises ``ValueError`` naming ``source``.
    """
    state = {k: v for k, v in state.items() if not k.startswith(TEXT_BRANCH_PREFIX) and not _is_counter(k)}
    expected = {k for k in model.state_dict() if not _is_counter(k)}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{source} does not hold the S3D HowTo100M visual weights (s3d_howto100m.pth): "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise ValueError(f"{source} does not hold the S3D HowTo100M visual weights: {error}") from error


@torch.no_grad()
def init_s3d_seeded_(model: S3D, seed: int) -> None:
    """Initialise ``model`` from ``seed`` with bitwise-identical weights on every machine.

    An isolated generator fills, in registration order, every convolution with
    ``U(-sqrt(6 / fan_in), +sqrt(6 / fan_in))`` (He's bound: without trained BatchNorm statistics
    the convolutions then keep the activation scale through the ReLUs; the gates still scale it
    down, so the pooled features are small, ~1e-3, but vary with the input) and every ``Linear``
    weight and bias with ``U(-1/sqrt(fan_in), +1/sqrt(fan_in))``, using only exactly reproducible
    integer draws (see ``encoders._exact_uniform_``). BatchNorm keeps its
    identity initialisation (weight 1, bias 0, running mean 0, variance 1).
    """
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.Conv3d):
            _exact_uniform_(module.weight, math.sqrt(6.0 / module.weight[0].numel()), generator)
        elif isinstance(module, nn.Linear):
            bound = 1.0 / math.sqrt(module.in_features)
            _exact_uniform_(module.weight, bound, generator)
            _exact_uniform_(module.bias, bound, generator)
        elif isinstance(module, nn.BatchNorm3d):
            module.reset_parameters()


def s3d_fingerprint(model: S3D) -> str:
    """:func:`~glance_focus.encoders.weights_fingerprint` of the visual weights (counters excluded)."""
    return weights_fingerprint({k: v for k, v in model.state_dict().items() if not _is_counter(k)})


def _cache_dir() -> Path:
    root = os.environ.get("GLANCE_FOCUS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "glance_focus"
    )
    return Path(root) / "s3d"


def _unavailable(spec: FrameEncoderSpec, reason: str) -> EncoderUnavailableError:
    return EncoderUnavailableError(
        f"Frame encoder weights '{spec}' are not available: {reason}. Download {HOWTO100M_FILE} (the HowTo100M "
        f"S3D release by Antoine Miech, {HOWTO100M_URL}) and pass 'S3D:/path/to/{HOWTO100M_FILE}', or use "
        "'S3D:random-seed0' for deterministic random weights that need no download."
    )


def resolve_s3d_weights(spec: FrameEncoderSpec) -> Path | None:
    """The local weights file an ``S3D:…`` spec names (None for ``random-seedN``).

    ``howto100m`` is taken from the cache (``$GLANCE_FOCUS_CACHE/s3d``, default
    ``~/.cache/glance_focus/s3d``) and downloaded there only when the network is allowed;
    otherwise :class:`EncoderUnavailableError` is raised at once.
    """
    if spec.seed is not None:
        return None
    if spec.weights_file is not None:
        if not spec.weights_file.is_file():
            raise _unavailable(spec, f"no such file {spec.weights_file}")
        return spec.weights_file
    if spec.pretrained != HOWTO100M_TAG:
        raise ValueError(
            f"{spec.pretrained!r} is not an S3D weight source: use 'S3D:{HOWTO100M_TAG}', "
            f"'S3D:/path/to/{HOWTO100M_FILE}' or 'S3D:random-seedN'"
        )
    cached = _cache_dir() / HOWTO100M_FILE
    if cached.is_file():
        return cached
    if hub_offline():
        raise _unavailable(spec, "not in the local cache and HF_HUB_OFFLINE forbids downloads")
    if not _host_reachable(HOWTO100M_URL):
        raise _unavailable(spec, f"not in the local cache and {HOWTO100M_URL} cannot be reached")
    cached.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{HOWTO100M_FILE}.", dir=cached.parent)
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(HOWTO100M_URL, timeout=60) as response:
            shutil.copyfileobj(response, out, length=1 << 20)
        os.replace(partial, cached)  # atomic: a broken download never looks like the file
    except Exception as error:  # any download failure means the same thing to the user
        raise _unavailable(spec, f"download failed ({error})") from error
    finally:
        Path(partial).unlink(missing_ok=True)
    return cached


def build_s3d(spec: FrameEncoderSpec) -> S3D:
    """The S3D visual tower an ``S3D:…`` spec names, fp32 on CPU, eval mode, frozen."""
    file = resolve_s3d_weights(spec)
    with torch.random.fork_rng(devices=[]):  # default init draws from the global RNG
        model = S3D()
    if file is None:
        assert spec.seed is not None
        init_s3d_seeded_(model, spec.seed)
    else:
        load_s3d_state(model, _read_state_dict(file), str(file))
    return model.eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------
# Frame encoder
# ----------------------------------------------------------------------------------------------


@dataclass(eq=False)
class S3DFrameEncoder:
    """A frozen S3D: RGB uint8 frames at 16 fps → one pooled Mixed_5c feature per 16-frame clip.

    Same interface as :class:`~glance_focus.encoders.FrameEncoder` (``spec``, ``fingerprint``,
    ``feature_dim``, ``verify_fingerprint``, ``encode``); features are not L2-normalised (the
    released STAR features are not).
    """

    spec: FrameEncoderSpec
    model: S3D
    device: torch.device
    precision: Precision = "fp32"
    batch_size: int = DEFAULT_CLIP_BATCH
    """Clips per forward."""
    clip_frames: int = CLIP_FRAMES
    crop: int = INPUT_SIZE

    def __post_init__(self) -> None:
        self.fingerprint = s3d_fingerprint(self.model)
        self.model = self.model.to(self.device)

    @property
    def feature_dim(self) -> int:
        return FEATURE_DIM

    def verify_fingerprint(self, expected: str | None) -> None:
        """Raise :class:`EncoderFingerprintError` unless the weights hash to ``expected`` (None: skip)."""
        if expected is not None and expected != self.fingerprint:
            raise EncoderFingerprintError(
                f"Frame encoder '{self.spec}' has weights fingerprint {self.fingerprint}, but {expected} is "
                "expected: these are not the S3D weights the model was trained with, and its answers would be "
                "meaningless. Use the exact weights named in the checkpoint's config."
            )

    def preprocess(self, frames: Tensor) -> Tensor:
        """RGB uint8 frames ``[N, H, W, 3]`` → ``[N, 3, crop, crop]`` float32 in [0, 1] on ``device``.

        Frames whose short side is not ``crop`` are first resized (bicubic, short side → ``crop``,
        long side truncated); the centre crop follows. Frames decoded by
        :func:`~glance_focus.video.sample_clips` arrive cropped already.
        """
        x = frames.to(self.device, non_blocking=True).permute(0, 3, 1, 2)  # (N, 3, H, W)
        height, width = x.shape[-2:]
        if min(height, width) != self.crop:
            size = clip_resize_size(height, width, self.crop)
            x = F.interpolate(x.float(), size=size, mode="bicubic", antialias=True).clamp_(0, 255).round_()
            height, width = size
        top, left = center_crop_offsets(height, width, self.crop)
        x = x[..., top : top + self.crop, left : left + self.crop]
        return x.float() / 255.0

    def encode(self, frames: np.ndarray | Tensor, batch_size: int | None = None) -> Tensor:
        """RGB uint8 frames ``[N, H, W, 3]`` sampled at 16 fps → features ``[N // 16, 1024]`` float32 on CPU.

        Consecutive groups of :attr:`clip_frames` frames are clips (a trailing partial clip is
        dropped, as the recipe drops the last partial second); ``batch_size`` clips per forward.
        """
        frames = _frames_tensor(frames)
        batch_size = batch_size or self.batch_size
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        num_clips = len(frames) // self.clip_frames
        chunks = []
        with torch.inference_mode():
            for start in range(0, num_clips, batch_size):
                stop = min(start + batch_size, num_clips)
                pixels = self.preprocess(frames[start * self.clip_frames : stop * self.clip_frames])
                clips = pixels.view(stop - start, self.clip_frames, 3, self.crop, self.crop).transpose(1, 2)
                with _autocast(self.device, self.precision):
                    chunks.append(self.model(clips.contiguous()).mixed_5c.float())  # (b, 1024)
        if not chunks:
            return torch.zeros(0, FEATURE_DIM)
        return torch.cat(chunks).cpu()

    def __repr__(self) -> str:
        return (
            f"S3DFrameEncoder('{self.spec}', feature_dim={FEATURE_DIM}, device={self.device}, "
            f"precision={self.precision})"
        )


def build_s3d_encoder(
    spec: FrameEncoderSpec, device: torch.device, precision: str = "auto", batch_size: int = DEFAULT_CLIP_BATCH
) -> S3DFrameEncoder:
    """An :class:`S3DFrameEncoder` for ``spec`` on ``device``; ``precision="auto"`` is fp32 (the
    recipe's precision; on CUDA convolutions may use TF32 as PyTorch allows by default). On CPU at
    most :data:`CPU_CLIP_BATCH` clips go through one forward (set ``batch_size`` afterwards to override)."""
    if device.type == "cpu":
        batch_size = min(batch_size, CPU_CLIP_BATCH)
    if precision == "auto":
        precision = "fp32"
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be 'auto', 'fp32', 'bf16' or 'fp16', not {precision!r}")
    return S3DFrameEncoder(spec, build_s3d(spec), device, precision, batch_size)  # type: ignore[arg-type]
