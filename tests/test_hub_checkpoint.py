"""Checkpoints named ``hf://OWNER/REPO[@REV][/SUBDIR]``, offline: a snapshot laid out in a temporary
Hugging Face cache exactly as huggingface_hub writes it (refs/, blobs/, snapshots/ with relative
links) resolves and loads; a repository that is not cached fails at once with a clear message."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from glance_focus.checkpoint import CheckpointError, hub_checkpoint_name, load_checkpoint, resolve_checkpoint_path

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "assets" / "models" / "synthetic-sup"
BUNDLED_DATA = ROOT / "assets" / "data" / "synthetic"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def cache_snapshot(hub_cache: Path, repo: str, files: dict[str, Path], commit: str = COMMIT) -> Path:
    """Lay ``files`` (repository path -> local file) out as a cached snapshot of ``repo`` at ``main``."""
    repo_dir = hub_cache / f"models--{repo.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    (repo_dir / "blobs").mkdir(exist_ok=True)
    snapshot = repo_dir / "snapshots" / commit
    for name, source in files.items():
        data = source.read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import huggingface_hub.constants as hub_constants

    cache = tmp_path / "hf-home" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    return cache


def bundled_files(prefix: str = "") -> dict[str, Path]:
    return {f"{prefix}{p.name}": p for p in BUNDLED.iterdir() if p.is_file()}


def test_cached_hub_checkpoint_with_subfolder_resolves_and_loads(hub_cache: Path) -> None:
    snapshot = cache_snapshot(hub_cache, "someone/glance-models", bundled_files("synthetic/"))
    path = resolve_checkpoint_path("hf://someone/glance-models/synthetic")
    assert path == snapshot / "synthetic"
    assert load_checkpoint(path).info.frame_encoder == "ViT-B-32:random-seed0"
    assert resolve_checkpoint_path(f"hf://someone/glance-models@{COMMIT}/synthetic") == path
    assert hub_checkpoint_name(path) == "someone/glance-models/synthetic"  # what the app's model list shows
    assert hub_checkpoint_name(BUNDLED) is None


def test_cached_hub_checkpoint_at_the_repository_root(hub_cache: Path) -> None:
    snapshot = cache_snapshot(hub_cache, "someone/glance-sup", bundled_files())
    assert resolve_checkpoint_path("hf://someone/glance-sup") == snapshot


def test_local_paths_are_left_as_they_are() -> None:
    assert resolve_checkpoint_path(BUNDLED) == BUNDLED
    assert resolve_checkpoint_path("relative/dir") == Path("relative/dir")


def test_uncached_hub_checkpoint_fails_at_once_offline(hub_cache: Path) -> None:
    with pytest.raises(CheckpointError, match="not in the local Hugging Face cache and HF_HUB_OFFLINE=1") as error:
        resolve_checkpoint_path("hf://someone/not-downloaded")
    assert "hf download someone/not-downloaded" in str(error.value)
    cache_snapshot(hub_cache, "someone/glance-sup", bundled_files())
    with pytest.raises(CheckpointError, match="no folder 'missing'"):
        resolve_checkpoint_path("hf://someone/glance-sup/missing")
    with pytest.raises(CheckpointError, match="hf://OWNER/REPO"):
        resolve_checkpoint_path("hf://just-a-name")


def _env(hf_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return {
        **env,
        "PYTHONPATH": str(ROOT),
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TQDM_DISABLE": "1",
    }


def small_split(root: Path, questions: int = 24) -> Path:
    """The bundled validation split cut to its first ``questions`` questions (same features and labels)."""
    (root / "txt_db").mkdir(parents=True)
    for name in ("events.json", "action_mapping.txt"):
        (root / "txt_db" / name).symlink_to(BUNDLED_DATA / "txt_db" / name)
    lines = (BUNDLED_DATA / "txt_db" / "val.jsonl").read_text().splitlines()[:questions]
    (root / "txt_db" / "val.jsonl").write_text("\n".join(lines) + "\n")
    (root / "features").symlink_to(BUNDLED_DATA / "features")
    for name in ("meta.json",):
        (root / name).symlink_to(BUNDLED_DATA / name)
    return root


def test_evaluate_cli_reads_hub_checkpoints(tmp_path: Path) -> None:
    hf_home = tmp_path / "hf-home"
    cache_snapshot(hf_home / "hub", "someone/glance-sup", bundled_files())
    data = small_split(tmp_path / "data")
    command = [sys.executable, str(ROOT / "train" / "evaluate.py"), "--data", str(data), "--split", "val"]
    missing = subprocess.run(
        [*command, "--checkpoint", "hf://someone/elsewhere"], env=_env(hf_home), capture_output=True, text=True
    )
    assert missing.returncode == 2
    assert missing.stderr.strip().startswith("error: checkpoint hf://someone/elsewhere: someone/elsewhere is not in")
    cached = subprocess.run(
        [*command, "--checkpoint", "hf://someone/glance-sup", "--json"],
        env=_env(hf_home),
        capture_output=True,
        text=True,
    )
    assert cached.returncode == 0, cached.stderr[-2000:]
    summary = json.loads(cached.stdout.strip().splitlines()[-1])
    assert summary["checkpoint"] == "hf://someone/glance-sup" and summary["num_questions"] == 24


def test_app_takes_hub_checkpoints(hub_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import app

    assert app.parse_args(["--checkpoint", "hf://someone/glance-sup@v1/sub"]).checkpoint == [
        "hf://someone/glance-sup@v1/sub"
    ]
    with pytest.raises(SystemExit) as stopped:
        app.main(["--checkpoint", "hf://someone/not-downloaded"])
    assert str(stopped.value.code).startswith("error: checkpoint hf://someone/not-downloaded: ")
    assert "HF_HUB_OFFLINE=1" in str(stopped.value.code)
    # a Space passes no arguments: its variable names the checkpoint
    monkeypatch.setenv("GLANCE_FOCUS_CHECKPOINT", "hf://someone/from-the-space-settings")
    with pytest.raises(SystemExit) as stopped:
        app.main([])
    assert str(stopped.value.code).startswith("error: checkpoint hf://someone/from-the-space-settings: ")
