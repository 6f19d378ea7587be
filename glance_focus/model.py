"""The Glance-Focus model: a question-free glance stage that turns frames into memory prompts, and a
focus stage that answers a question by multi-level attention over those prompts and the frames.

Notation: B videos, T frames, F feature width, D model width, Q memory prompts, C event classes
(+1 background), O question sequences per video ("question + option" for multiple-choice, one
for open-ended), L text tokens, H text-encoder width, V answer vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glance_focus.config import GlanceFocusConfig, SpanFormat, SpanParametrization
from glance_focus.spans import ordered_spans_se, span_se_to_cw
from glance_focus.transformer import (
    DecoderLayer,
    EncoderLayer,
    FocusLayerAttention,
    FocusMemory,
    TransformerDecoder,
    TransformerEncoder,
    padding_to_bias,
)


@dataclass(frozen=True)
class GlanceOutput:
    """Glance-stage results for B videos."""

    event_logits: Tensor
    """``[B, Q, C+1]``; the last class is background."""
    spans: Tensor
    """``[B, Q, 2]`` in [0, 1], read according to ``config.span_format``."""
    memory_prompts: Tensor
    """``[B, Q, D]``: last decoder layer's event-query states."""
    encoder_attention: tuple[Tensor, ...]
    """Per encoder layer ``[B, T, T]``."""
    decoder_self_attention: tuple[Tensor, ...]
    """Per decoder layer ``[B, Q+1, Q+1]``."""
    cross_attention: tuple[Tensor, ...]
    """Per decoder layer ``[B, Q+1, T]``: every query over the frames; row Q is the QA query."""

    @property
    def prompt_to_frame(self) -> Tensor:
        """``[B, Q, T]``: last layer's attention of each memory prompt over the frames."""
        return self.cross_attention[-1][:, :-1]


@dataclass(frozen=True)
class FocusOutput:
    """Focus-stage results for B videos with O question sequences each (B*R rows where the focus
    stage was given R prompt sets per video).

    The attention properties are those of the decoder layer the answer is read from (``answer_layer``):
    the last one, or the first in reference-compatible models, whose later layers do not reach the answer.
    """

    answer_logits: Tensor
    """Multiple-choice ``[B, O]`` (one score per option); open-ended ``[B, V]``."""
    encoder_attention: tuple[Tensor, ...]
    """Per encoder layer ``[B*O, T+Q+L, T+Q+L]``; empty where the focus ran without ``need_attention``."""
    layers: tuple[FocusLayerAttention, ...]
    """Per decoder layer MLA attention, rows ordered video-major (B*O); empty without ``need_attention``."""
    answer_layer: int
    """Index of the decoder layer whose QA-query output the answer head reads (into ``layers``
    where they were computed)."""

    @property
    def question_to_memory(self) -> Tensor:
        """``[B*O, L, Q]``: answer layer, question tokens over the event memory (the memory prompts, or
        under ``compat_event_memory_slice`` the last ``compat_event_memory_size`` encoded positions)."""
        return self.layers[self.answer_layer].question_to_memory

    @property
    def events_to_frames(self) -> Tensor:
        """``[B*O, L, T']``: answer layer, selected events over the frame memory."""
        return self.layers[self.answer_layer].events_to_frames

    @property
    def answer_to_selection(self) -> Tensor:
        """``[B*O, L]``: answer layer, the QA query over the per-token selected moments."""
        return self.layers[self.answer_layer].query_to_selection[:, -1]

    @property
    def answer_to_frames(self) -> Tensor:
        """``[B*O, T']``: the QA query's attention carried through to the frames (step 3 x step 2)."""
        return torch.einsum("nl,nlt->nt", self.answer_to_selection, self.events_to_frames)


@dataclass(frozen=True)
class GlanceFocusOutput:
    glance: GlanceOutput
    sort_order: Tensor
    """``[B, Q]``: prompt indices in temporal order (sorted by the first span coordinate)."""
    sorted_memory_prompts: Tensor
    """``[B, Q, D]``"""
    focus: FocusOutput


class WeightNormLinear(nn.Module):
    """Linear layer with weight = scale * direction / ||direction|| (one scalar norm over the matrix)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        linear = nn.Linear(in_features, out_features)
        self.weight_direction = nn.Parameter(linear.weight.detach().clone())
        self.weight_scale = nn.Parameter(linear.weight.detach().norm())
        self.bias = nn.Parameter(linear.bias.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight_direction * (self.weight_scale / self.weight_direction.norm())
        return F.linear(x, weight, self.bias)


class TextResizer(nn.Module):
    """Text-encoder token states ``[..., H]`` -> ``[..., D]`` (Linear, LayerNorm, dropout)."""

    def __init__(self, text_hidden_size: int, d_model: int, dropout: float) -> None:
        super().__init__()
        self.fc = nn.Linear(text_hidden_size, d_model)
        self.norm = nn.LayerNorm(d_model, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.norm(self.fc(x)))


class SpanHead(nn.Module):
    """Three-layer MLP ``[..., Q, D] -> [..., Q, 2]``: a span in [0, 1] written in ``span_format``.

    ``independent``: a sigmoid per number (the reference). ``ordered``: the two raw numbers become
    (start, end) with start <= end by construction (:func:`ordered_spans_se`), then ``span_format``;
    with ``num_anchors`` = Q, prompt q's raw numbers are offset so that zero means the q-th of Q
    equal slots of the video.
    """

    def __init__(
        self,
        d_model: int,
        span_format: SpanFormat,
        parametrization: SpanParametrization,
        num_anchors: int | None = None,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(d_model, d_model), nn.Linear(d_model, d_model), nn.Linear(d_model, 2)])
        self.span_format = span_format
        self.parametrization = parametrization
        anchors = torch.zeros(num_anchors or 1, 2)
        if num_anchors:
            slot = torch.arange(num_anchors, dtype=torch.float32)
            start = slot / num_anchors  # slot q is [q/Q, (q+1)/Q]: start q/Q, then 1/(Q-q) of the rest
            fraction = 1.0 / (num_anchors - slot)
            anchors = torch.stack([start, fraction], dim=-1).clamp(1e-3, 1 - 1e-3).logit()
        # Not saved: a function of Q, so checkpoints keep their keys.
        self.register_buffer("anchors", anchors, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        raw = self.layers[-1](x)
        if self.parametrization == "independent":
            return raw.sigmoid()
        spans = ordered_spans_se(raw + self.anchors)  # (..., Q, 2); zero offsets without anchors
        return span_se_to_cw(spans) if self.span_format == "cw" else spans


def sine_time_encoding(times: Tensor, dim: int) -> Tensor:
    """Sine/cosine encoding of normalised times ``[B, T]`` in [0, 1] -> ``[B, T, dim]`` (DETR-style)."""
    half = torch.arange(dim // 2, dtype=torch.float32, device=times.device)
    inv_freq = 10000.0 ** (-2.0 * half / dim)  # (dim/2,)
    angles = times[..., None].float() * (2 * math.pi) * inv_freq  # (B, T, dim/2)
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)


def frame_times(frame_padding: Tensor) -> Tensor:
    """Normalised centre time of each frame ``[B, T]``, given its padding ``[B, T]`` (padding at the end)."""
    valid = (~frame_padding).sum(dim=1, keepdim=True).clamp(min=1)  # (B, 1)
    index = torch.arange(frame_padding.shape[1], device=frame_padding.device)[None, :]
    return (index + 0.5) / valid


def _each_set(per_sequence: Tensor, batch: int, sets: int) -> Tensor:
    """``[B*O, ...]`` (video-major) -> ``[B*R*O, ...]``: each video's O rows repeated for its R prompt sets."""
    if sets == 1:
        return per_sequence
    rows = per_sequence.view(batch, 1, -1, *per_sequence.shape[1:])
    return rows.expand(-1, sets, *rows.shape[2:]).flatten(0, 2)


class GlanceFocus(nn.Module):
    """Glance-Focus. ``glance()`` and ``focus()`` are separate; ``forward()`` runs glance -> sort -> focus."""

    def __init__(self, config: GlanceFocusConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        if config.standardize_features:
            self.register_buffer("feature_mean", torch.zeros(config.feature_dim))
            self.register_buffer("feature_std", torch.ones(config.feature_dim))
        self.input_proj = WeightNormLinear(config.feature_dim, d)
        self.event_queries = nn.Embedding(config.num_memory_prompts, d)
        self.answer_query = nn.Embedding(1, d)
        self.prompt_position = nn.Embedding(config.num_memory_prompts, d)
        self.text_proj = TextResizer(config.text_hidden_size, d, config.text_dropout)
        self.encoder = TransformerEncoder(
            EncoderLayer(d, config.num_heads, config.ffn_dim, config.dropout), config.num_encoder_layers
        )
        self.decoder = TransformerDecoder(
            DecoderLayer(d, config.num_heads, config.ffn_dim, config.dropout, config.share_mla_attention),
            config.num_decoder_layers,
            d,
        )
        self.class_head = nn.Linear(d, config.num_event_logits)
        self.span_head = SpanHead(
            d,
            config.span_format,
            config.span_parametrization,
            config.num_memory_prompts if config.span_anchors else None,
        )
        if config.task == "multiple_choice":
            self.answer_head: nn.Module = nn.Sequential(nn.Linear(d, 2 * d), nn.ReLU(), nn.Linear(2 * d, 1))
        else:
            self.answer_head = nn.Linear(d, config.answer_vocab_size)
        for module in (self.encoder, self.decoder):
            for p in module.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)

    @torch.no_grad()
    def set_feature_statistics(self, mean: Tensor, std: Tensor) -> None:
        """Per-dimension mean and standard deviation ``[F]`` of the training frame features."""
        if not self.config.standardize_features:
            raise ValueError("this model does not standardise its features (standardize_features=False)")
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std.clamp(min=1e-6))

    # ------------------------------------------------------------------ helpers
    def _frame_tokens(self, frames: Tensor, frame_padding: Tensor) -> Tensor:
        """frames ``[B, T, F]`` -> tokens ``[B, T, D]`` (standardisation, projection, ReLU, temporal position)."""
        if self.config.standardize_features:
            frames = (frames - self.feature_mean) / self.feature_std
        tokens = F.relu(self.input_proj(frames))
        if self.config.temporal_position == "sine":
            tokens = tokens + sine_time_encoding(frame_times(frame_padding), self.config.d_model).to(tokens.dtype)
        return tokens

    def _visual_bias(self, frame_padding: Tensor, extra_tokens: int, hidden_frames: Tensor | None) -> Tensor:
        """Key bias ``[B, T + extra_tokens]`` for frames followed by never-padded tokens (prompts).

        The reference passes float ones as a key-padding mask: +1 on every visual logit. Hidden
        frames get -inf in every mode: they are removed, whatever the reference did with padding.
        """
        batch = frame_padding.shape[0]
        prompt_padding = torch.zeros(batch, extra_tokens, dtype=torch.bool, device=frame_padding.device)
        if self.config.compat_float_masks:
            bias = torch.ones(batch, frame_padding.shape[1] + extra_tokens, device=frame_padding.device)
        else:
            bias = padding_to_bias(torch.cat([frame_padding, prompt_padding], dim=1))
        if hidden_frames is not None:
            bias = bias.masked_fill(torch.cat([hidden_frames, prompt_padding], dim=1), float("-inf"))
        return bias

    def _query_pos(self, batch: int) -> Tensor:
        """``[batch, Q+1, D]``: the event queries followed by the QA query."""
        queries = torch.cat([self.event_queries.weight, self.answer_query.weight], dim=0)
        return queries.unsqueeze(0).expand(batch, -1, -1)

    @staticmethod
    def _check_inputs(
        frames: Tensor, frame_padding: Tensor | None, hidden_frames: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Validated (frame_padding ``[B, T]`` bool, hidden_frames ``[B, T]`` bool or None)."""
        if frames.dim() != 3:
            raise ValueError(f"frames must be [B, T, F], got {tuple(frames.shape)}")
        if frame_padding is None:
            frame_padding = torch.zeros(frames.shape[:2], dtype=torch.bool, device=frames.device)
        elif frame_padding.shape != frames.shape[:2]:
            raise ValueError(f"frame_padding {tuple(frame_padding.shape)} does not match frames {tuple(frames.shape)}")
        frame_padding = frame_padding.bool()
        if frame_padding.all(dim=1).any():
            raise ValueError("every video needs at least one unpadded frame")
        if hidden_frames is None:
            return frame_padding, None
        if hidden_frames.shape != frames.shape[:2]:
            raise ValueError(f"hidden_frames {tuple(hidden_frames.shape)} does not match frames {tuple(frames.shape)}")
        hidden_frames = hidden_frames.bool()
        if (frame_padding | hidden_frames).all(dim=1).any():
            raise ValueError("every video needs at least one frame that is neither padded nor hidden")
        return frame_padding, hidden_frames

    # ------------------------------------------------------------------ stages
    def glance(
        self, frames: Tensor, frame_padding: Tensor | None = None, *, hidden_frames: Tensor | None = None
    ) -> GlanceOutput:
        """Question-free glance stage.

        Args:
            frames: frame features ``[B, T, F]``.
            frame_padding: ``[B, T]`` bool, True at padded frames (padding at the end), or None.
            hidden_frames: ``[B, T]`` bool, True at real frames to leave out: they are removed from
                every attention (also under ``compat_float_masks``, which ignores padding) while the
                other frames keep their time positions. None hides nothing.
        """
        frame_padding, hidden_frames = self._check_inputs(frames, frame_padding, hidden_frames)
        tokens = self._frame_tokens(frames, frame_padding)  # (B, T, D)
        bias = self._visual_bias(frame_padding, 0, hidden_frames)
        memory, encoder_maps = self.encoder(tokens, bias)
        states, self_maps, cross_maps = self.decoder.glance(self._query_pos(frames.shape[0]), memory, bias)
        prompts = states[-1, :, :-1]  # (B, Q, D): the QA query's glance output is discarded
        return GlanceOutput(
            event_logits=self.class_head(prompts),
            spans=self.span_head(prompts),
            memory_prompts=prompts,
            encoder_attention=encoder_maps,
            decoder_self_attention=self_maps,
            cross_attention=cross_maps,
        )

    @staticmethod
    def sort_memory_prompts(glance: GlanceOutput) -> tuple[Tensor, Tensor]:
        """Order memory prompts by their span's first coordinate: (prompts ``[B, Q, D]``, order ``[B, Q]``)."""
        order = glance.spans[..., 0].argsort(dim=1)
        prompts = torch.gather(glance.memory_prompts, 1, order[..., None].expand_as(glance.memory_prompts))
        return prompts, order

    def focus(
        self,
        frames: Tensor,
        frame_padding: Tensor | None,
        memory_prompts: Tensor,
        text_hidden: Tensor,
        text_padding: Tensor,
        *,
        prompt_slots: Tensor | None = None,
        hidden_frames: Tensor | None = None,
        need_attention: bool = True,
    ) -> FocusOutput:
        """Question-driven focus stage.

        Args:
            frames: ``[B, T, F]``; frame_padding ``[B, T]`` bool or None.
            memory_prompts: temporally sorted prompts ``[B, Q', D]``: all Q, or the subset named by
                ``prompt_slots``. ``[B*R, Q', D]`` (video-major) answers each video's questions R
                times, once with each of R prompt sets, and computes the frames' and the text's
                tokens once per video: the logits then have B*R rows, as for R copies of each video.
            text_hidden: text-encoder token states ``[B, O, L, H]``, one sequence per option
                ("question option") or O = 1 for open-ended models.
            text_padding: ``[B, O, L]`` bool, True at padding tokens.
            prompt_slots: ``[B, Q']`` (or ``[B*R, Q']``) long, the temporal slot (0..Q-1) of each
                given prompt, which selects its position embedding; None means all Q prompts in
                slot order. Passing fewer prompts runs the focus stage on those alone: the others
                are not in the sequence at all. With ``compat_event_memory_slice`` the "event memory" stays the
                last Q encoded positions of that shorter sequence.
            hidden_frames: ``[B, T]`` bool, as in :meth:`glance`.
            need_attention: False when only the answer logits are wanted: no attention maps are
                formed (``encoder_attention`` and ``layers`` are empty) and only the work the
                answer depends on is done (the encoder's outputs the decoder reads, the QA query's
                state in the layer the answer is read from); the logits are the same.
        """
        cfg = self.config
        frame_padding, hidden_frames = self._check_inputs(frames, frame_padding, hidden_frames)
        batch, num_frames = frame_padding.shape
        if text_hidden.dim() != 4 or text_hidden.shape[0] != batch:
            raise ValueError(f"text_hidden must be [B={batch}, O, L, H], got {tuple(text_hidden.shape)}")
        num_seqs = text_hidden.shape[1]
        if cfg.task == "open_ended" and num_seqs != 1:
            raise ValueError("an open-ended model takes one question sequence per video (O = 1)")
        text_padding = text_padding.bool().flatten(0, 1)  # (N, L)
        if text_padding.all(dim=1).any():
            raise ValueError("every question sequence needs at least one token")
        num_prompts = memory_prompts.shape[1]
        sets = memory_prompts.shape[0] // batch  # R prompt sets per video
        if sets < 1 or memory_prompts.shape[0] != sets * batch:
            raise ValueError(
                f"memory_prompts {tuple(memory_prompts.shape)} must hold one or more prompt sets per video (B={batch})"
            )
        if prompt_slots is None:
            if num_prompts != cfg.num_memory_prompts:
                raise ValueError(f"{num_prompts} memory prompts given for Q={cfg.num_memory_prompts}: name their slots")
            positions = self.prompt_position.weight  # (Q, D)
        else:
            if prompt_slots.shape != memory_prompts.shape[:2] or num_prompts < 1:
                raise ValueError(
                    f"prompt_slots {tuple(prompt_slots.shape)} must be [B, Q'] with Q' >= 1, as the "
                    f"prompts {tuple(memory_prompts.shape[:2])}"
                )
            positions = self.prompt_position(prompt_slots)  # (B*R, Q', D)

        # N = B*R*O sequences, ordered (video, prompt set, option).
        per_video = sets * num_seqs
        frame_tokens = self._frame_tokens(frames, frame_padding).repeat_interleave(per_video, 0)  # (N, T, D)
        prompt_tokens = memory_prompts + positions  # (B*R, Q', D)
        prompt_tokens = prompt_tokens.repeat_interleave(num_seqs, 0)  # (N, Q', D)
        text_tokens = _each_set(self.text_proj(text_hidden.flatten(0, 1)), batch, sets)  # (N, L, D)
        text_padding = _each_set(text_padding, batch, sets)  # (N, L)
        src = torch.cat([frame_tokens, prompt_tokens, text_tokens], dim=1)  # (N, T+Q+L, D)

        visual_bias = self._visual_bias(frame_padding, num_prompts, hidden_frames).repeat_interleave(per_video, 0)
        text_bias = padding_to_bias(text_padding)
        # The reference concatenates the boolean text mask onto the float ones: padding -> +1, tokens -> 0.
        src_text_bias = text_padding.float() if cfg.compat_float_masks else text_bias
        src_bias = torch.cat([visual_bias, src_text_bias], dim=1)  # (N, T+Q+L)
        # Corrected models read only the frames' and prompts' encodings (the text memory is taken
        # before the encoder), so the last encoder layer can skip the text positions.
        read_rows = None if need_attention or cfg.compat_event_memory_slice else num_frames + num_prompts
        memory, encoder_maps = self.encoder(src, src_bias, need_attention=need_attention, output_rows=read_rows)

        if cfg.compat_event_memory_slice:
            tail = cfg.compat_event_memory_size  # the reference slices a literal 10, whatever Q
            events, event_bias = memory[:, -tail:], src_bias[:, -tail:]
            frames_mem, frame_bias = memory[:, :-tail], src_bias[:, :-tail]
        else:
            events, event_bias = memory[:, num_frames : num_frames + num_prompts], None
            frames_mem, frame_bias = memory[:, :num_frames], src_bias[:, :num_frames]
        focus_memory = FocusMemory(text_tokens, events, event_bias, frames_mem, frame_bias, text_bias)
        layer = 0 if cfg.compat_answer_from_first_layer else cfg.num_decoder_layers - 1
        if need_attention:
            states, layer_maps = self.decoder.focus(self._query_pos(src.shape[0]), focus_memory)
            answer_state = states[layer, :, -1]  # (N, D)
        else:
            answer_state = self.decoder.answer_state(self._query_pos(src.shape[0]), focus_memory, layer)
            layer_maps = ()
        logits = self.answer_head(answer_state)
        logits = logits.view(batch * sets, num_seqs) if cfg.task == "multiple_choice" else logits
        return FocusOutput(answer_logits=logits, encoder_attention=encoder_maps, layers=layer_maps, answer_layer=layer)

    def forward(
        self,
        frames: Tensor,
        frame_padding: Tensor | None,
        text_hidden: Tensor,
        text_padding: Tensor,
        *,
        hidden_frames: Tensor | None = None,
    ) -> GlanceFocusOutput:
        """Glance -> sort -> focus. Shapes as in :meth:`glance` and :meth:`focus`; ``hidden_frames``
        ``[B, T]`` leaves those frames out of both stages."""
        glance = self.glance(frames, frame_padding, hidden_frames=hidden_frames)
        sorted_prompts, order = self.sort_memory_prompts(glance)
        focus = self.focus(
            frames, frame_padding, sorted_prompts, text_hidden, text_padding, hidden_frames=hidden_frames
        )
        return GlanceFocusOutput(glance=glance, sort_order=order, sorted_memory_prompts=sorted_prompts, focus=focus)
