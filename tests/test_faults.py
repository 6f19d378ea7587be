"""Faults the tools must survive: a SIGKILL in the middle of feature extraction, a full disk under
extraction, checkpoint saving and the feature cache, and an accelerator that runs out of memory.

A full disk is simulated with ``RLIMIT_FSIZE`` (Python ignores ``SIGXFSZ``, so a write past the
limit fails with ``EFBIG``, "File too large", as it would with ``ENOSPC``); the tests run as root,
for whom a read-only mode would not stop a write. SIGKILL during ``train/train.py`` is covered by
``tests/test_training.py``.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from glance_focus.checkpoint import load_checkpoint, read_checkpoint_info, save_checkpoint
from glance_focus.data.features import FeatureStore
from glance_focus.feature_cache import FeatureCache, FeatureKey
from glance_focus.model import GlanceFocus
from glance_focus.pipeline import Predictor
from glance_focus.synthetic import generate
from glance_focus.video import VideoWorkerPool
from tests.test_checkpoint import make_info
from tests.test_pipeline import make_checkpoint, sample_video
from tests.tiny import tiny_config

ROOT = Path(__file__).resolve().parents[1]
NUM_VIDEOS = 6
NUM_FRAMES = 16


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def _extract_cmd(data: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "train" / "extract_features.py"),
        *("--dataset", "synthetic", "--data", str(data), "--split", "val", "--out", str(out)),
        *("--num-frames", str(NUM_FRAMES), "--workers", "0", "--device", "cpu", "--precision", "fp32"),
    ]


@contextmanager
def file_size_limit(num_bytes: int) -> Iterator[None]:
    """Within the block, this process cannot write a file past ``num_bytes`` (a full disk)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (num_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def _limit_file_size(num_bytes: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (num_bytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return apply


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("syn")
    generate(root, seed=7, num_videos=NUM_VIDEOS, split="val")
    return root


# ----------------------------------------------------------------------------------------------
# Feature extraction


def test_sigkill_during_extraction_then_rerun_keeps_finished_videos(dataset: Path, tmp_path: Path) -> None:
    straight = tmp_path / "straight.safetensors"
    subprocess.run(_extract_cmd(dataset, straight), env=_env(), check=True, capture_output=True, timeout=300)

    out = tmp_path / "killed.safetensors"
    parts = out.with_name(out.name + ".parts")
    proc = subprocess.Popen(
        _extract_cmd(dataset, out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if parts.is_dir() and len(list(parts.glob("*.safetensors"))) >= 2:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = sorted(parts.glob("*.safetensors"))
    assert 2 <= len(finished) < NUM_VIDEOS, "the run was killed part way"
    assert not out.exists()
    for part in finished:  # every part that exists is whole
        with safe_open(str(part), framework="pt") as f:
            assert f.get_tensor("features").shape[0] == NUM_FRAMES

    done = subprocess.run(_extract_cmd(dataset, out), env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])["splits"]["val"]
    assert summary["skipped_videos"] >= len(finished), "finished videos were not encoded again"
    assert summary["skipped_videos"] + summary["encoded_videos"] == NUM_VIDEOS
    a, b = FeatureStore(straight), FeatureStore(out)
    assert sorted(a.keys()) == sorted(b.keys()) and len(a.keys()) == NUM_VIDEOS
    for video_id in a:
        assert torch.allclose(a[video_id], b[video_id], atol=1e-6), video_id
    assert a.metadata == b.metadata


def test_extraction_on_a_full_disk_fails_clearly_and_leaves_no_partial_file(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "full.safetensors"
    # Room for each video's part (16 x 512 float32, 32 KB) but not for the assembled file.
    done = subprocess.run(
        _extract_cmd(dataset, out),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limit_file_size(100_000),
    )
    assert done.returncode != 0
    assert "File too large" in done.stderr.strip().splitlines()[-1] and "Traceback" not in done.stderr
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "no temporary file left beside it"
    parts = out.with_name(out.name + ".parts")
    assert len(list(parts.glob("*.safetensors"))) == NUM_VIDEOS, "finished videos are kept for the rerun"

    rerun = subprocess.run(_extract_cmd(dataset, out), env=_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert json.loads(rerun.stdout.strip().splitlines()[-1])["splits"]["val"]["skipped_videos"] == NUM_VIDEOS
    assert len(FeatureStore(out).keys()) == NUM_VIDEOS


def test_extraction_to_an_unwritable_place_fails_with_a_message(dataset: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the output folder should be")
    done = subprocess.run(
        _extract_cmd(dataset, blocker / "val.safetensors"), env=_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: cannot write the features of val to ")
    assert blocker.read_text() == "a file where the output folder should be"


# ----------------------------------------------------------------------------------------------
# Checkpoints and the feature cache


def test_checkpoint_save_on_a_full_disk_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    model = GlanceFocus(tiny_config())
    save_checkpoint(tmp_path / "best", model, make_info(model.config, metadata={"step": 1}))
    before = (tmp_path / "best" / "model.safetensors").read_bytes()
    with file_size_limit(4096), pytest.raises(Exception, match="File too large"):
        save_checkpoint(tmp_path / "best", model, make_info(model.config, metadata={"step": 2}))
    assert read_checkpoint_info(tmp_path / "best").metadata == {"step": 1}
    assert (tmp_path / "best" / "model.safetensors").read_bytes() == before
    load_checkpoint(tmp_path / "best")
    assert [p.name for p in tmp_path.iterdir()] == ["best"], "no staging directory left"


def test_feature_cache_on_a_full_disk_fails_clearly_and_leaves_no_partial_entry(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "cache", max_bytes=10**8)
    key = FeatureKey("0" * 64, "ViT-B-32:random-seed0", "fp", "uniform8")
    with file_size_limit(4096), pytest.raises(OSError, match="File too large"):
        cache.put(key, np.ones((8, 512), np.float32), np.arange(8.0))
    assert list(cache.root.iterdir()) == []
    assert cache.get(key) is None


def test_a_full_disk_does_not_fail_a_question(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The feature cache only saves time: when it cannot be written, the question is still answered."""
    predictor = Predictor(make_checkpoint(tmp_path / "ckpt"), device="cpu", cache_dir=tmp_path / "cache")
    predictor.warm_up()
    video = sample_video("bikes.mp4")
    predictor.predict(sample_video("bigbuckbunny.mp4"), "Warm?", ["yes", "no"])  # decoding workers started
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir())
    with file_size_limit(4096):
        result = predictor.predict(video, "What happens?", ["a bike passes", "it rains"])
    assert result.answer in ("a bike passes", "it rains") and not result.timings.feature_cache_hit
    assert "feature cache" in caplog.text and "File too large" in caplog.text
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == entries, "no partial entry left"


# ----------------------------------------------------------------------------------------------
# Accelerator out of memory (simulated: this machine has no GPU)


class _OutOfMemory:
    """Stands in for an encoder on a full GPU: same identity, every call raises as CUDA would."""

    def __init__(self, encoder: object) -> None:
        self.spec = getattr(encoder, "spec", None)
        self.fingerprint = getattr(encoder, "fingerprint", None)
        self.batch_size = getattr(encoder, "batch_size", None)
        self.device = torch.device("cuda")
        self.calls = 0

    def encode(self, *args: object, **kwargs: object) -> torch.Tensor:
        self.calls += 1
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("oom") / "ckpt")


def _on_full_gpu(predictor: Predictor, monkeypatch: pytest.MonkeyPatch, part: str) -> _OutOfMemory:
    """Make ``predictor`` believe it runs on CUDA, with its ``part`` ("frame" or "text") encoder out of memory."""
    if part == "frame":
        full = _OutOfMemory(predictor.frame_encoder)
        monkeypatch.setattr(predictor, "_frame_encoder", full)
    else:
        full = _OutOfMemory(predictor.text)
        monkeypatch.setattr(predictor, "_text", full)
    monkeypatch.setattr(predictor, "device", torch.device("cuda"))
    return full


def test_out_of_gpu_memory_in_the_frame_encoder_is_answered_on_the_cpu(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    video, options = sample_video("bikes.mp4"), ["a bike passes", "it rains"]
    expected = Predictor(checkpoint, device="cpu").predict(video, "What happens?", options)
    predictor = Predictor(checkpoint, device="cpu")
    full = _on_full_gpu(predictor, monkeypatch, "frame")
    result = predictor.predict(video, "What happens?", options)
    assert full.calls == 1
    assert result.answer == expected.answer
    assert np.allclose(result.probabilities, expected.probabilities, atol=1e-6)
    assert predictor.cpu_fallback.device.type == "cpu"


def test_out_of_gpu_memory_in_the_text_encoder_is_answered_on_the_cpu(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    features = torch.randn(8, 512, generator=torch.Generator().manual_seed(0))
    expected = Predictor(checkpoint, device="cpu").predict_features(features, "Which?", ["one", "two"], duration_s=4)
    predictor = Predictor(checkpoint, device="cpu")
    full = _on_full_gpu(predictor, monkeypatch, "text")
    result = predictor.predict_features(features, "Which?", ["one", "two"], duration_s=4)
    assert full.calls == 1 and result.answer == expected.answer
    assert np.allclose(result.probabilities, expected.probabilities, atol=1e-6)


def test_out_of_memory_on_the_cpu_is_not_retried(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    predictor = Predictor(checkpoint, device="cpu")
    full = _OutOfMemory(predictor.text)
    monkeypatch.setattr(predictor, "_text", full)
    with pytest.raises(torch.OutOfMemoryError):
        predictor.predict_features(torch.zeros(8, 512), "Which?", ["one", "two"], duration_s=4)
    assert full.calls == 1 and predictor._cpu_fallback is None


# ----------------------------------------------------------------------------------------------
# A serving process killed outright


def test_scratch_folder_of_a_killed_server_is_removed_by_the_next_pool() -> None:
    """Decoded frames pass through a scratch folder (in RAM, /dev/shm, when it has room); a SIGKILL
    leaves it behind, and the next pool on the machine removes it."""
    code = (
        "from glance_focus.video import VideoWorkerPool; p = VideoWorkerPool(1); print(p._tmpdir, flush=True); input()"
    )
    server = subprocess.Popen(
        [sys.executable, "-c", code], env=_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    scratch = Path(server.stdout.readline().strip())
    (scratch / "frames.npy").write_bytes(bytes(1000))  # a request in flight
    server.send_signal(signal.SIGKILL)
    server.wait()
    assert scratch.is_dir()
    with VideoWorkerPool(max_workers=1) as pool:
        assert not scratch.exists()
        assert Path(pool._tmpdir).is_dir(), "a live pool's folder is kept"
        with VideoWorkerPool(max_workers=1):  # another pool, while this process is alive
            assert Path(pool._tmpdir).is_dir()
