"""Training curves of a run as one PNG: the loss terms and the validation metrics against the step.

    python train/plot_curves.py runs/syn4k-uns/metrics.jsonl --out assets/models/synthetic-uns/curves.png

Reads the run's ``metrics.jsonl`` (``train.py`` writes it). A resumed run logs again the steps
after its last checkpoint; the later record of a step wins. The left panel shows each loss term
(smoothed over ``--smooth`` logged points), the right one validation accuracy overall and per
question type, and the class-agnostic event-span mean IoU where the run recorded it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from glance_focus.data.types import atomic_path


def read_records(path: Path) -> dict[str, list[dict]]:
    """The records of each kind (``train``, ``val``) in step order, one per step (the last logged)."""
    by_kind: dict[str, dict[int, dict]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            by_kind.setdefault(record["kind"], {})[int(record["step"])] = record
        except (ValueError, KeyError, TypeError) as error:
            raise SystemExit(f"error: {path} line {number} is not a metrics record ({error})") from None
    return {kind: [records[step] for step in sorted(records)] for kind, records in by_kind.items()}


def smoothed(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` points (fewer at the start)."""
    sums = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (sums[1:] - sums[np.arange(1, len(values) + 1) - counts]) / counts


def plot(records: dict[str, list[dict]], title: str, smooth: int) -> Figure:
    """Two panels: loss terms (left), validation metrics (right)."""
    figure = Figure(figsize=(11, 4), dpi=110)
    losses, metrics = figure.subplots(1, 2)
    train = records.get("train", [])
    if train:
        steps = np.array([r["step"] for r in train])
        terms = [key for key in train[0] if key.startswith("loss")]
        for term in terms:
            values = np.array([r.get(term, np.nan) for r in train], dtype=float)
            losses.plot(steps, smoothed(values, smooth), label=term.removeprefix("loss_") or "loss")
        losses.set_xlabel("step")
        losses.set_title(f"training loss terms (mean of {smooth} logged points)")
        losses.legend(fontsize=8)
        losses.grid(alpha=0.3)
    val = records.get("val", [])
    if val:
        steps = np.array([r["step"] for r in val])
        metrics.plot(steps, [r["accuracy"] for r in val], color="black", linewidth=2, label="accuracy")
        for qtype in sorted(val[-1].get("accuracy_by_type", {})):
            metrics.plot(steps, [r["accuracy_by_type"].get(qtype, np.nan) for r in val], label=qtype, linewidth=1)
        if "span_miou_class_agnostic" in val[-1]:
            metrics.plot(
                steps,
                [r.get("span_miou_class_agnostic", np.nan) for r in val],
                linestyle="--",
                color="gray",
                label="span mIoU (class-agnostic)",
            )
        metrics.set_ylim(0, 1.02)
        metrics.set_xlabel("step")
        metrics.set_title("validation")
        metrics.legend(fontsize=8, loc="lower right")
        metrics.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", type=Path, help="a run's metrics.jsonl")
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--title", default="", help="figure title (default: the run folder's name)")
    parser.add_argument("--smooth", type=int, default=10, help="logged points per loss average (default 10)")
    args = parser.parse_args(argv)
    if not args.metrics.is_file():
        parser.error(f"{args.metrics} does not exist")
    if args.smooth < 1:
        parser.error("--smooth must be at least 1")
    records = read_records(args.metrics)
    if not records:
        parser.error(f"{args.metrics} holds no records")
    figure = plot(records, args.title or args.metrics.resolve().parent.name, args.smooth)
    with atomic_path(args.out) as partial:
        figure.savefig(partial, format="png")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
