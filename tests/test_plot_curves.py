"""train/plot_curves.py: a run's metrics.jsonl as one PNG, resumed runs read as one history."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from train.plot_curves import main, read_records, smoothed


def write_metrics(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_a_resumed_run_keeps_the_later_record_of_each_step(tmp_path: Path) -> None:
    records = [
        {"kind": "train", "step": 50, "loss": 2.0, "loss_qa": 2.0},
        {"kind": "train", "step": 100, "loss": 1.5, "loss_qa": 1.5},
        {"kind": "val", "step": 100, "accuracy": 0.4, "accuracy_by_type": {"Sequence": 0.3}},
        # resumed from the step-50 checkpoint: step 100 logged again, with other numbers
        {"kind": "train", "step": 100, "loss": 1.4, "loss_qa": 1.4},
        {"kind": "train", "step": 150, "loss": 1.2, "loss_qa": 1.2},
    ]
    read = read_records(write_metrics(tmp_path / "metrics.jsonl", records))
    assert [r["step"] for r in read["train"]] == [50, 100, 150]
    assert read["train"][1]["loss"] == 1.4
    assert [r["step"] for r in read["val"]] == [100]


def test_smoothing_is_a_trailing_mean() -> None:
    values = np.array([1.0, 3.0, 5.0, 7.0])
    np.testing.assert_allclose(smoothed(values, 2), [1.0, 2.0, 4.0, 6.0])
    np.testing.assert_allclose(smoothed(values, 1), values)


def test_writes_a_png_and_names_a_broken_line(tmp_path: Path) -> None:
    metrics = write_metrics(
        tmp_path / "metrics.jsonl",
        [
            {"kind": "train", "step": 50, "loss": 2.0, "loss_qa": 2.0, "loss_cls": -0.5},
            {"kind": "val", "step": 50, "accuracy": 0.5, "accuracy_by_type": {"A": 0.5}},
        ],
    )
    out = tmp_path / "curves" / "run.png"
    main([str(metrics), "--out", str(out)])
    assert out.read_bytes().startswith(b"\x89PNG")
    assert list(out.parent.iterdir()) == [out]  # no partial file left

    metrics.write_text(metrics.read_text() + "{not json\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="line 3 is not a metrics record"):
        main([str(metrics), "--out", str(out)])
