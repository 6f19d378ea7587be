"""The repository deploys as a Hugging Face Space: the front matter names a Python for which the
runtime requirements resolve to binary wheels (and so does ZeroGPU's Python 3.10), the runtime
requirements hold no test tool, and every binary file the repository holds goes to Git LFS.

The resolution tests ask the configured package index (``pip install --dry-run``; nothing is
installed) and are skipped, saying why, only when pip cannot reach any index.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
ZEROGPU_PYTHON = "3.10.13"
"""The only Python ZeroGPU Spaces run (Hugging Face's ZeroGPU documentation)."""
UNREACHABLE = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name resolution|"
    r"Name or service not known|Network is unreachable|ConnectTimeout|Could not fetch URL"
)


def front_matter() -> dict[str, str]:
    """The README's YAML front matter (flat ``key: value`` lines, as Spaces reads them)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, "README.md starts with no front matter"
    return {k.strip(): v.strip().strip("\"'") for k, v in (line.split(":", 1) for line in match[1].splitlines())}


def requirements_for(python: str, path: Path = ROOT / "requirements.txt") -> list[str]:
    """The requirement lines a ``python`` interpreter installs from ``path`` (markers evaluated as
    pip on that interpreter would; ``pip --python-version`` evaluates them for the running one)."""
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        environment = {"python_version": ".".join(python.split(".")[:2]), "python_full_version": python}
        if requirement.marker is None or Marker(str(requirement.marker)).evaluate(environment):
            requirement.marker = None
            lines.append(str(requirement))
    return lines


def resolve(python: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    pinned = tmp_path / f"requirements-{python}.txt"
    pinned.write_text("\n".join(requirements_for(python)) + "\n", encoding="utf-8")
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:"]
    command += ["--python-version", python, "--disable-pip-version-check", "-r", str(pinned)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0 and UNREACHABLE.search(result.stdout + result.stderr):
        pytest.skip(f"pip cannot reach a package index: {UNREACHABLE.search(result.stdout + result.stderr)[0]}")
    return result


def test_front_matter_names_the_space() -> None:
    matter = front_matter()
    assert matter["sdk"] == "gradio" and matter["app_file"] == "app.py"
    assert re.fullmatch(r"3\.\d+(\.\d+)?", matter["python_version"])
    gradio_pin = next(line for line in requirements_for(matter["python_version"]) if line.startswith("gradio=="))
    assert gradio_pin == f"gradio=={matter['sdk_version']}"


@pytest.mark.parametrize("python", [front_matter()["python_version"], ZEROGPU_PYTHON])
def test_runtime_requirements_resolve_to_binary_wheels(python: str, tmp_path: Path) -> None:
    result = resolve(python, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Would install" in result.stdout


def test_runtime_requirements_hold_no_test_or_development_tool() -> None:
    names = {Requirement(line).name.lower() for line in requirements_for("3.11")}
    assert not names & {"pytest", "pytest-timeout", "ruff", "playwright", "scikit-video", "spaces"}
    dev = (ROOT / "requirements-dev.txt").read_text(encoding="utf-8")
    assert "-r requirements.txt" in dev and all(tool in dev for tool in ("pytest", "ruff", "playwright"))


def test_every_binary_file_goes_to_lfs() -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    binaries = []
    for name in filter(None, files):
        path = ROOT / name.decode()
        if path.is_file() and path.stat().st_size and b"\0" in path.read_bytes()[:8192]:
            binaries.append(name.decode())
    assert binaries, "expected the bundled model and videos"
    attributes = subprocess.run(
        ["git", "check-attr", "filter", "--", *binaries], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    not_lfs = [line.split(":")[0] for line in attributes.splitlines() if not line.endswith(": filter: lfs")]
    assert not not_lfs, f"binary files outside LFS: {not_lfs[:10]}"
