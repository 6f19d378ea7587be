"""The training program: every dataset layout, exact resume, torchrun, and a SIGKILL mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from glance_focus.checkpoint import load_checkpoint, load_training_state
from glance_focus.trainer import train
from train.train import build_parser, config_from_args

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "data"
TINY = ["--d-model", "32", "--heads", "4", "--ffn", "64", "--prompts", "4", "--lr", "1e-3"]


def run_args(dataset: str, out: Path, *extra: str) -> list[str]:
    return ["--dataset", dataset, "--data", str(FIXTURES / dataset), "--out", str(out), *TINY, *extra]


def train_in_process(args: list[str]):
    return train(config_from_args(build_parser().parse_args(args)))


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "last" / "model.safetensors"))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= atol, f"weights differ by {worst}"


@pytest.mark.parametrize(
    "dataset,setting,val_split",
    [("star", "sup", "val"), ("agqa", "sup", "test"), ("nextqa", "uns", "none"), ("egotaskqa", "sup", "test")],
)
def test_trains_on_every_layout(tmp_path: Path, dataset: str, setting: str, val_split: str) -> None:
    out = tmp_path / dataset
    result = train_in_process(
        run_args(dataset, out, "--setting", setting, "--val-split", val_split, "--batch-size", "2", "--max-steps", "3")
    )
    loaded = load_checkpoint(out / "last")
    assert loaded.info.metadata["dataset"] == dataset
    assert loaded.info.metadata["setting"] == setting
    assert load_training_state(out / "last")["step"] == 3
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"][-1] == 3
    assert any((out / "tb").iterdir()), "TensorBoard events are written"
    if val_split != "none":
        assert result is not None and result.num_questions > 0
        assert (out / "best" / "model.safetensors").is_file()
        best = json.loads((out / "best" / "config.json").read_text())["metadata"]["val"]
        assert best["accuracy"] == result.accuracy
    if loaded.model.config.task == "open_ended":
        assert loaded.info.answer_vocab and len(loaded.info.answer_vocab) == loaded.model.config.answer_vocab_size


def test_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    common = ["--batch-size", "2", "--dropout", "0.2", "--eval-every", "2"]
    train_in_process(run_args("star", tmp_path / "straight", *common, "--max-steps", "7"))
    train_in_process(run_args("star", tmp_path / "resumed", *common, "--max-steps", "3"))
    train_in_process(run_args("star", tmp_path / "resumed", *common, "--max-steps", "7"))
    assert_same_weights(weights(tmp_path / "straight"), weights(tmp_path / "resumed"), atol=1e-6)
    a = load_training_state(tmp_path / "straight" / "last")
    b = load_training_state(tmp_path / "resumed" / "last")
    assert a["step"] == b["step"] == 7
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


def _cli(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "train" / "train.py"), *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def test_sigkill_mid_run_resumes_without_corruption(tmp_path: Path) -> None:
    common = ["--batch-size", "1", "--save-every", "2", "--eval-every", "1000", "--val-split", "none"]
    straight = tmp_path / "straight"
    subprocess.run(
        _cli(*run_args("star", straight, *common, "--max-steps", "60")), env=_env(), check=True, capture_output=True
    )
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _cli(*run_args("star", killed, *common, "--max-steps", "60")),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = killed / "last" / "training_state.pt"
        if state.is_file() and load_training_state(killed / "last")["step"] >= 6:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    interrupted_at = load_training_state(killed / "last")["step"]
    assert 6 <= interrupted_at < 60, "the run was killed mid-way"
    load_checkpoint(killed / "last")  # whatever the kill interrupted, last/ is a whole checkpoint
    subprocess.run(
        _cli(*run_args("star", killed, *common, "--max-steps", "60")), env=_env(), check=True, capture_output=True
    )
    assert load_training_state(killed / "last")["step"] == 60
    assert_same_weights(weights(straight), weights(killed), atol=1e-6)
    assert not [p.name for p in killed.iterdir() if p.name.startswith(".")], "no staging leftovers"


def test_torchrun_two_processes_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29517",
        str(ROOT / "train" / "train.py"),
        *run_args("star", out, "--batch-size", "2", "--max-steps", "4", "--eval-every", "2", "--device", "cpu"),
    ]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert load_training_state(out / "last")["step"] == 4
    assert (out / "best" / "config.json").is_file()
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["num_questions"] == 2
