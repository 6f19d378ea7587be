"""Two models side by side over one dataset split: accuracy per question type for each, and the
questions on which their answers differ (DESIGN.md §7, Compare). No UI code here.

Both runs come from :func:`~glance_focus.inspection.run_inspection` on the same split, so each
accuracy is exactly what that run's own overview (and ``train/evaluate.py``) reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from glance_focus.inspection import InspectionError, InspectionRow, InspectionRun


@dataclass(frozen=True)
class TypeComparison:
    """One question type under both models."""

    question_type: str
    questions: int
    accuracy_a: float | None
    """From run A's metrics; None where the split hides its answers."""
    accuracy_b: float | None
    disagreements: int
    """Questions of this type the two models answer differently."""


@dataclass(frozen=True)
class PairedRow:
    """One question with both models' rows."""

    a: InspectionRow
    b: InspectionRow

    @property
    def disagree(self) -> bool:
        return self.a.prediction != self.b.prediction


@dataclass(frozen=True)
class RunComparison:
    """Runs A and B over the same split, question by question."""

    name_a: str
    name_b: str
    accuracy_a: float | None
    accuracy_b: float | None
    by_type: tuple[TypeComparison, ...]
    pairs: tuple[PairedRow, ...]
    """Every question of the split, in run A's order."""

    @property
    def disagreements(self) -> list[PairedRow]:
        return [p for p in self.pairs if p.disagree]


def compare_runs(run_a: InspectionRun, run_b: InspectionRun, name_a: str = "A", name_b: str = "B") -> RunComparison:
    """Pair the questions of two runs over one split.

    Raises:
        InspectionError: the runs are over different datasets, splits or questions.
    """
    if (run_a.dataset, run_a.split) != (run_b.dataset, run_b.split):
        raise InspectionError(
            f"the two runs are over different splits ({run_a.dataset}/{run_a.split} and {run_b.dataset}/{run_b.split})"
        )
    ids_a = [r.question_id for r in run_a.rows]
    if sorted(ids_a) != sorted(r.question_id for r in run_b.rows):
        raise InspectionError("the two runs hold different questions: run both on the same version of the split")
    pairs = tuple(PairedRow(row, run_b.row(row.question_id)) for row in run_a.rows)
    by_type = []
    for qtype in sorted({p.a.question_type for p in pairs}):
        group = [p for p in pairs if p.a.question_type == qtype]
        by_type.append(
            TypeComparison(
                question_type=qtype,
                questions=len(group),
                accuracy_a=run_a.metrics["accuracy_by_type"].get(qtype),
                accuracy_b=run_b.metrics["accuracy_by_type"].get(qtype),
                disagreements=sum(p.disagree for p in group),
            )
        )
    return RunComparison(
        name_a=name_a,
        name_b=name_b,
        accuracy_a=run_a.accuracy,
        accuracy_b=run_b.accuracy,
        by_type=tuple(by_type),
        pairs=pairs,
    )


def filter_pairs(
    pairs: Iterable[PairedRow], *, disagree_only: bool = False, question_type: str | None = None
) -> list[PairedRow]:
    """The pairs passing the filters (None or False means no filter), in their original order."""
    return [
        p
        for p in pairs
        if (not disagree_only or p.disagree) and (not question_type or p.a.question_type == question_type)
    ]


def by_type_table(comparison: RunComparison) -> tuple[list[str], list[list[Any]]]:
    """Headers and rows ``[type, questions, accuracy A, accuracy B, disagreements]``, then an "all" row."""
    headers = ["question type", "questions", f"accuracy {comparison.name_a}", f"accuracy {comparison.name_b}"]
    headers.append("answers differ")

    def rounded(value: float | None) -> float | str:
        return "" if value is None else round(value, 4)

    rows = [
        [t.question_type, t.questions, rounded(t.accuracy_a), rounded(t.accuracy_b), t.disagreements]
        for t in comparison.by_type
    ]
    rows.append(
        [
            "all",
            len(comparison.pairs),
            rounded(comparison.accuracy_a),
            rounded(comparison.accuracy_b),
            len(comparison.disagreements),
        ]
    )
    return headers, rows


def pairs_table(comparison: RunComparison, pairs: Sequence[PairedRow]) -> tuple[list[str], list[list[Any]]]:
    """Headers and one row per pair: id, type, question, both answers (✓/✗), the correct answer."""
    headers = ["question_id", "type", "question", comparison.name_a, comparison.name_b, "correct answer"]

    def answer(row: InspectionRow) -> str:
        mark = {True: " ✓", False: " ✗", None: ""}[row.correct]
        return f"{row.predicted}{mark}"

    rows = [
        [p.a.question_id, p.a.question_type, p.a.question, answer(p.a), answer(p.b), p.a.correct_answer] for p in pairs
    ]
    return headers, rows
