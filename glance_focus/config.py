"""Configuration dataclasses: every architecture number and every loss weight lives here.

The model is rebuilt from a checkpoint as ``GlanceFocus(GlanceFocusConfig.from_dict(saved))``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

Task = Literal["multiple_choice", "open_ended"]
SpanFormat = Literal["se", "cw"]
SpanParametrization = Literal["ordered", "independent"]


# Sane bounds for every size, so a hostile or corrupt config.json cannot ask for absurd allocations.
_SIZE_BOUNDS = {
    "feature_dim": (1, 65536),
    "d_model": (1, 16384),
    "num_heads": (1, 512),
    "ffn_dim": (1, 131072),
    "num_encoder_layers": (1, 64),
    "num_decoder_layers": (1, 64),
    "num_memory_prompts": (1, 1024),
    "num_event_classes": (1, 100_000),
    "text_hidden_size": (1, 65536),
    "answer_vocab_size": (0, 1_000_000),
    "compat_event_memory_size": (1, 1024),
}


@dataclass(frozen=True)
class GlanceFocusConfig:
    """Architecture of a Glance-Focus model.

    The ``compat_*`` switches replicate behaviours of the published reference code that differ
    from the paper (DESIGN.md §2.1). They default to the corrected behaviour;
    :meth:`reference_compat` turns them all on, which a checkpoint trained with the reference
    code needs to reproduce its predictions.
    """

    feature_dim: int = 512
    """F: width of the input frame features."""
    d_model: int = 512
    """D: width of every token inside the model."""
    num_heads: int = 8
    ffn_dim: int = 2048
    num_encoder_layers: int = 2
    num_decoder_layers: int = 2
    dropout: float = 0.1
    text_dropout: float = 0.1
    """Dropout after resizing text-encoder tokens to ``d_model``."""
    num_memory_prompts: int = 10
    """Q: learnable event queries, one memory prompt each."""
    num_event_classes: int = 110
    """C: event (action) classes, background excluded. Heads predict C + 1 classes."""
    text_hidden_size: int = 384
    """Width of the text encoder's token states (384 for MiniLM, 768 for roberta-base)."""
    task: Task = "multiple_choice"
    answer_vocab_size: int = 0
    """Open-ended answer vocabulary size (ignored for multiple-choice)."""
    span_format: SpanFormat = "se"
    """How the two numbers of a predicted span are to be read: (start, end) or (center, width)."""
    span_parametrization: SpanParametrization = "ordered"
    """How the span head's two outputs become a span. ``ordered``: a start and the fraction of the
    rest of the video the span takes, so 0 <= start <= end <= 1 always holds (then written in
    ``span_format``). ``independent``: two sigmoids read directly in ``span_format`` (the reference;
    a (start, end) head can then put the end before the start). Checkpoints saved before this
    field existed are ``independent``: :meth:`from_dict` fills that in."""
    span_anchors: bool = False
    """Ordered spans only: memory prompt q's span head is offset so that, for a zero output, its span
    is the q-th of Q equal slots of the video (an anchor, as DETR variants give their queries). The
    prompts start apart, so a diversity loss has a symmetry to keep rather than one to break; the
    unsupervised setting needs it (without it, prompts start nearly identical and the spans of
    every prompt grow together to the whole video: docs/unsupervised.md)."""
    standardize_features: bool = True
    """Standardise frame features per dimension with training-set statistics stored in the model
    (buffers ``feature_mean``/``feature_std``). CLIP embeddings of similar frames share most of their
    direction; without this the input projection sees differences of a few hundredths."""
    temporal_position: Literal["none", "sine"] = "sine"
    """Position encoding added to frame tokens in both stages ("none" in the reference)."""
    share_mla_attention: bool = True
    """One cross-attention module serves glance and all three multi-level steps (as in the reference)."""
    compat_event_memory_slice: bool = False
    """Reference: the MLA "event memory" is the last ``compat_event_memory_size`` encoded positions
    (text tokens in fact), and the frame memory everything before them."""
    compat_event_memory_size: int = 10
    """How many trailing positions that slice takes: a literal 10 in the reference code, whatever Q."""
    compat_float_masks: bool = False
    """Reference: float ones as visual key-padding mask, concatenated with the text mask (+1 logits)."""
    compat_answer_from_first_layer: bool = False
    """Reference: the answer head reads the QA query from the first decoder layer."""
    compat_text_padding: bool = False
    """Reference text path: the strings encoded together are padded to the longest (none truncated) and
    the text encoder's float32 states at every position, padding included, are fed to the focus stage."""

    def __post_init__(self) -> None:
        for name, (low, high) in _SIZE_BOUNDS.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
        for name in ("dropout", "text_dropout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < 1:
                raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}")
        if self.task not in ("multiple_choice", "open_ended"):
            raise ValueError(f"unknown task {self.task!r}")
        if self.task == "open_ended" and self.answer_vocab_size < 1:
            raise ValueError("an open-ended model needs answer_vocab_size >= 1")
        if self.span_format not in ("se", "cw"):
            raise ValueError(f"unknown span_format {self.span_format!r}")
        if self.span_parametrization not in ("ordered", "independent"):
            raise ValueError(f"unknown span_parametrization {self.span_parametrization!r}")
        if self.span_anchors and self.span_parametrization != "ordered":
            raise ValueError("span_anchors needs span_parametrization='ordered'")
        if self.temporal_position not in ("none", "sine"):
            raise ValueError(f"unknown temporal_position {self.temporal_position!r}")

    @property
    def num_event_logits(self) -> int:
        """C + 1: event classes plus background."""
        return self.num_event_classes + 1

    def reference_compat(self) -> GlanceFocusConfig:
        """This config with every reference-code behaviour of DESIGN.md §2.1 switched on."""
        return dataclasses.replace(
            self,
            standardize_features=False,
            temporal_position="none",
            span_parametrization="independent",
            span_anchors=False,
            share_mla_attention=True,
            compat_event_memory_slice=True,
            compat_float_masks=True,
            compat_answer_from_first_layer=True,
            compat_text_padding=True,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GlanceFocusConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown GlanceFocusConfig fields: {unknown}")
        # Saved before spans were ordered by construction: keep the head those weights were trained in.
        values = {"span_parametrization": "independent", **values}
        return cls(**values)


UNSUPERVISED_LOSSES = ("qa", "cls", "overlap", "coverage", "cert")
"""The corrected unsupervised criterion (see :class:`LossConfig`)."""
REFERENCE_UNSUPERVISED_LOSSES = ("qa", "cls", "giou", "cert")


@dataclass(frozen=True)
class LossConfig:
    """Loss terms, their coefficients and the Hungarian matcher's costs (DESIGN.md §3).

    Temporal diversity in the unsupervised setting is a choice of terms:

    - ``giou`` (the reference, :meth:`reference`): mean pairwise GIoU of a video's spans. It
      collapses: for two disjoint spans GIoU = -gap / enclosing, which keeps falling as both
      shrink, so its minimum is zero-width spans, and nothing else trains the span head (prompts
      are sorted by ``argsort``, which passes no gradient). Kept exactly for compatibility.
    - ``overlap`` + ``coverage`` (the default): mean pairwise IoU of the spans clipped to the video,
      which is 0 for any disjoint arrangement and so gives nothing for shrinking, plus the fraction
      of the video no span covers, which zero-width spans maximise. Their joint minimum is a
      tiling of the video. In a model they need ``GlanceFocusConfig.span_anchors`` (on for the
      unsupervised setting): one shared span head over nearly identical fresh memory prompts moves
      every span together, and coverage then makes every span the whole video.
    - ``align`` (optional): each span pulled towards the span its prompt's glance attention covers
      (a detached target), so spans could follow the content instead of a fixed tiling.

    Chosen by experiment (docs/unsupervised.md, a small-scale ablation: 150 videos, 400 steps):
    the reference term drove every span to zero width (class-agnostic span mIoU 0.000);
    overlap + coverage without anchors made every span the whole video; with anchors the spans
    tile the video (width 1/Q, mIoU 0.462, as much as ten fixed slots score) at no cost in answer
    accuracy. ``align`` changed nothing at that scale (the glance attention stayed nearly uniform),
    so it is not in the default.
    """

    setting: Literal["sup", "uns"] = "sup"
    losses: tuple[str, ...] = ("qa", "cls", "l1")
    weights: dict[str, float] = field(
        default_factory=lambda: {
            "qa": 1.0,
            "cls": 0.5,
            "l1": 0.5,
            "giou": 0.5,
            "overlap": 0.5,
            "coverage": 0.5,
            "align": 0.5,
            "cert": 1.0,
        }
    )
    match_cost_class: float = 1.0
    match_cost_l1: float = 1.0
    background_weight: float = 0.1
    """Weight of the background class in the event-class cross-entropy."""
    unmatched_as_background: bool = True
    """Supervise unmatched prompts as background (DETR). The reference supervises matched ones only."""

    def __post_init__(self) -> None:
        allowed = {
            "sup": {"qa", "cls", "l1"},
            "uns": {"qa", "cls", "giou", "overlap", "coverage", "align", "cert"},
        }[self.setting]
        bad = sorted(set(self.losses) - allowed)
        if bad:
            raise ValueError(f"losses {bad} do not exist in the {self.setting!r} setting ({sorted(allowed)})")
        missing = sorted(set(self.losses) - set(self.weights))
        if missing:
            raise ValueError(f"losses {missing} have no weight")
        if self.match_cost_class == 0 and self.match_cost_l1 == 0:
            raise ValueError("the matcher needs a non-zero cost")

    @classmethod
    def unsupervised(cls, **overrides: Any) -> LossConfig:
        """The corrected unsupervised criterion: ``qa``, ``cls``, ``overlap``, ``coverage``, ``cert``."""
        return cls(**{"setting": "uns", "losses": UNSUPERVISED_LOSSES, **overrides})

    @classmethod
    def reference(cls, setting: Literal["sup", "uns"] = "sup") -> LossConfig:
        """The reference code's criterion: matched-only class loss; pairwise GIoU when unsupervised."""
        if setting == "uns":
            return cls.unsupervised(losses=REFERENCE_UNSUPERVISED_LOSSES, unmatched_as_background=False)
        return cls(unmatched_as_background=False)
