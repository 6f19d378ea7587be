"""Transformer layers of Glance-Focus: attention that returns its weights, post-norm encoder, and
a decoder whose layer runs either the glance step (self-attention, cross-attention to frames) or
the focus step (multi-level attention, MLA).

Masks are passed as additive key biases ``[B, Lk]`` (0 keeps a key, -inf removes it); see
:func:`padding_to_bias`. Every attention returns head-averaged weights ``[B, Lq, Lk]``, unless the
caller says it does not need them (``need_weights`` / ``need_attention`` False): then a fused
attention kernel runs and no weights are formed, for the same outputs. A caller that needs only
an answer can also ask for fewer outputs: the encoder's first positions
(``TransformerEncoder(..., output_rows=n)``) or one decoder query's state
(:meth:`TransformerDecoder.answer_state`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def padding_to_bias(padding: Tensor) -> Tensor:
    """Boolean padding ``[B, L]`` (True = padding) -> additive key bias ``[B, L]`` (-inf at padding)."""
    bias = torch.zeros(padding.shape, dtype=torch.float32, device=padding.device)
    return bias.masked_fill(padding, float("-inf"))


class MultiheadAttention(nn.Module):
    """Multi-head attention with packed input projection, returning head-averaged weights.

    Parameter layout matches ``torch.nn.MultiheadAttention`` (``in_proj``: ``[3D, D]``).
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_bias: Tensor | None = None,
        *,
        need_weights: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """query ``[B, Lq, D]``, key/value ``[B, Lk, D]``, key_bias ``[B, Lk]`` added to the logits.

        Returns the output ``[B, Lq, D]`` and the head-averaged attention ``[B, Lq, Lk]``, or None
        with ``need_weights=False`` (a fused kernel, no weights formed; the same output).
        """
        d_model = query.shape[-1]
        w_q, w_k, w_v = self.in_proj.weight.split(d_model)
        b_q, b_k, b_v = self.in_proj.bias.split(d_model)
        q = self._split_heads(F.linear(query, w_q, b_q))  # (B, h, Lq, hd)
        k = self._split_heads(F.linear(key, w_k, b_k))  # (B, h, Lk, hd)
        v = self._split_heads(F.linear(value, w_v, b_v))  # (B, h, Lk, hd)
        if not need_weights:
            mask = None if key_bias is None else key_bias[:, None, None, :].to(q.dtype)
            dropout = self.dropout if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
            return self.out_proj(out.transpose(1, 2).flatten(2)), None
        logits = (q * (1.0 / math.sqrt(self.head_dim))) @ k.transpose(-2, -1)  # (B, h, Lq, Lk)
        if key_bias is not None:
            logits = logits + key_bias[:, None, None, :].to(logits.dtype)
        weights = logits.softmax(dim=-1)
        weights = F.dropout(weights, p=self.dropout, training=self.training)
        out = (weights @ v).transpose(1, 2).flatten(2)  # (B, Lq, D)
        return self.out_proj(out), weights.mean(dim=1)

    def _split_heads(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)


class FeedForward(nn.Module):
    """Two linear layers with ReLU: ``[..., D] -> [..., D]``."""

    def __init__(self, d_model: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(F.relu(self.linear1(x))))


class EncoderLayer(nn.Module):
    """Post-norm self-attention layer."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, num_heads, dropout)
        self.ffn = FeedForward(d_model, ffn_dim, dropout)
        self.self_norm = nn.LayerNorm(d_model)
        self.ffn_norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, key_bias: Tensor | None, *, need_attention: bool = True, output_rows: int | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """x ``[B, L, D]`` -> (x ``[B, L', D]``, self-attention ``[B, L', L]`` or None without ``need_attention``).

        ``output_rows`` n computes only the first n positions' outputs (L' = n; every position is
        still attended to); None computes all (L' = L).
        """
        rows = x if output_rows is None else x[:, :output_rows]
        attended, weights = self.self_attn(rows, x, x, key_bias, need_weights=need_attention)
        x = self.self_norm(rows + self.dropout(attended))
        x = self.ffn_norm(x + self.dropout(self.ffn(x)))
        return x, weights


class TransformerEncoder(nn.Module):
    def __init__(self, layer: EncoderLayer, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))

    def forward(
        self, x: Tensor, key_bias: Tensor | None, *, need_attention: bool = True, output_rows: int | None = None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """x ``[B, L, D]`` -> (encoded ``[B, L', D]``, per-layer self-attention ``[B, L, L]``).

        Without ``need_attention`` no attention maps are formed (the tuple is empty; the same
        encoding). ``output_rows`` n returns only the first n positions (L' = n), which saves the
        last layer's work for the others; None returns all (L' = L).
        """
        maps = []
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            rows = output_rows if index == last else None
            x, weights = layer(x, key_bias, need_attention=need_attention, output_rows=rows)
            if weights is not None:
                maps.append(weights)
        return x, tuple(maps)


@dataclass(frozen=True)
class FocusMemory:
    """What one MLA decoder layer reads, for N = B x O question sequences.

    text: resized text tokens ``[N, L, D]`` (before the encoder, as in the reference);
    events: event memory ``[N, Ke, D]`` with ``event_bias`` ``[N, Ke]``;
    frames: frame memory ``[N, Kf, D]`` with ``frame_bias`` ``[N, Kf]``;
    text_bias: ``[N, L]`` masks padded text tokens in the last step.
    """

    text: Tensor
    events: Tensor
    event_bias: Tensor | None
    frames: Tensor
    frame_bias: Tensor | None
    text_bias: Tensor


@dataclass(frozen=True)
class FocusLayerAttention:
    """Head-averaged attention of one MLA layer."""

    self_attention: Tensor
    """``[N, Q+1, Q+1]``"""
    question_to_memory: Tensor
    """``[N, L, Ke]``: each question token over the event memory (step 1)."""
    events_to_frames: Tensor
    """``[N, L, Kf]``: the selected events over the frames (step 2)."""
    query_to_selection: Tensor
    """``[N, Q+1, L]``: decoder queries over the selected moments, one per question token (step 3)."""


class DecoderLayer(nn.Module):
    """Decoder layer: :meth:`glance_step` (self-attn, cross-attn, FFN) or :meth:`focus_step` (MLA)."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float, share_mla_attention: bool) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, num_heads, dropout)
        self.cross_attn = MultiheadAttention(d_model, num_heads, dropout)
        self.share_mla_attention = share_mla_attention
        if not share_mla_attention:
            self.question_attn = MultiheadAttention(d_model, num_heads, dropout)
            self.frame_attn = MultiheadAttention(d_model, num_heads, dropout)
        self.ffn = FeedForward(d_model, ffn_dim, dropout)
        self.self_norm = nn.LayerNorm(d_model)
        self.event_norm = nn.LayerNorm(d_model)
        self.frame_norm = nn.LayerNorm(d_model)
        self.ffn_norm = nn.LayerNorm(d_model)
        self.focus_norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def _self_attend(
        self, tgt: Tensor, query_pos: Tensor, *, need_weights: bool = True, rows: slice = slice(None)
    ) -> tuple[Tensor, Tensor | None]:
        """The queries ``rows`` of tgt ``[N, Q+1, D]`` after self-attention over all of them."""
        q = tgt + query_pos
        attended, weights = self.self_attn(q[:, rows], q, tgt, need_weights=need_weights)
        return self.self_norm(tgt[:, rows] + self.dropout(attended)), weights

    def _feed_forward(self, tgt: Tensor) -> Tensor:
        return self.ffn_norm(tgt + self.dropout(self.ffn(tgt)))

    def glance_step(
        self, tgt: Tensor, query_pos: Tensor, memory: Tensor, memory_bias: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """tgt/query_pos ``[B, Q+1, D]``, memory ``[B, T, D]`` -> (tgt, self ``[B,Q+1,Q+1]``, cross ``[B,Q+1,T]``)."""
        tgt, self_weights = self._self_attend(tgt, query_pos)
        attended, cross_weights = self.cross_attn(tgt + query_pos, memory, memory, memory_bias)
        tgt = self.frame_norm(tgt + self.dropout(attended))
        return self._feed_forward(tgt), self_weights, cross_weights

    def focus_step(
        self,
        tgt: Tensor,
        query_pos: Tensor,
        memory: FocusMemory,
        *,
        need_attention: bool = True,
        rows: slice = slice(None),
    ) -> tuple[Tensor, FocusLayerAttention | None]:
        """Multi-level attention. tgt/query_pos ``[N, Q+1, D]`` -> tgt ``[N, Q+1, D]``.

        (1) question tokens select events from the memory, (2) the selected events find their
        moment among the frames, (3) the decoder queries read those moments; then the FFN.
        Steps (1) and (2) have no residual: their outputs are new sequences indexed by token.

        Without ``need_attention`` no attention maps are formed (None; the same states). ``rows``
        computes only those queries' states (all queries are still attended to), e.g.
        ``slice(-1, None)`` for the QA query alone: tgt ``[N, len(rows), D]``.
        """
        question_attn = self.cross_attn if self.share_mla_attention else self.question_attn
        frame_attn = self.cross_attn if self.share_mla_attention else self.frame_attn
        weights = need_attention  # whether each attention forms its weights
        tgt, self_weights = self._self_attend(tgt, query_pos, need_weights=weights, rows=rows)
        selected_events, q2m = question_attn(
            memory.text, memory.events, memory.events, memory.event_bias, need_weights=weights
        )
        selected_events = self.event_norm(self.dropout(selected_events))  # (N, L, D)
        moments, e2f = frame_attn(
            selected_events, memory.frames, memory.frames, memory.frame_bias, need_weights=weights
        )
        moments = self.frame_norm(self.dropout(moments))  # (N, L, D)
        attended, q2s = self.cross_attn(
            tgt + query_pos[:, rows], moments, moments, memory.text_bias, need_weights=weights
        )
        tgt = self.focus_norm(tgt + self.dropout(attended))
        attention = FocusLayerAttention(self_weights, q2m, e2f, q2s) if need_attention else None
        return self._feed_forward(tgt), attention


class TransformerDecoder(nn.Module):
    """Stack of :class:`DecoderLayer` with a shared final LayerNorm applied to every layer's output."""

    def __init__(self, layer: DecoderLayer, num_layers: int, d_model: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    def glance(
        self, query_pos: Tensor, memory: Tensor, memory_bias: Tensor | None
    ) -> tuple[Tensor, tuple[Tensor, ...], tuple[Tensor, ...]]:
        """query_pos ``[B, Q+1, D]`` -> (normed per-layer states ``[layers, B, Q+1, D]``, self maps, cross maps)."""
        tgt = torch.zeros_like(query_pos)
        states, self_maps, cross_maps = [], [], []
        for layer in self.layers:
            tgt, self_weights, cross_weights = layer.glance_step(tgt, query_pos, memory, memory_bias)
            states.append(self.norm(tgt))
            self_maps.append(self_weights)
            cross_maps.append(cross_weights)
        return torch.stack(states), tuple(self_maps), tuple(cross_maps)

    def focus(self, query_pos: Tensor, memory: FocusMemory) -> tuple[Tensor, tuple[FocusLayerAttention, ...]]:
        """query_pos ``[N, Q+1, D]`` -> (normed per-layer states ``[layers, N, Q+1, D]``, per-layer attention)."""
        tgt = torch.zeros_like(query_pos)
        states, maps = [], []
        for layer in self.layers:
            tgt, attention = layer.focus_step(tgt, query_pos, memory)
            states.append(self.norm(tgt))
            maps.append(attention)
        return torch.stack(states), tuple(maps)

    def answer_state(self, query_pos: Tensor, memory: FocusMemory, layer: int) -> Tensor:
        """The QA query's normed state ``[N, D]`` after decoder layer ``layer`` (negative counts from
        the end) of :meth:`focus`, computed with only the work it depends on and no attention maps.

        The QA query is the last of ``query_pos [N, Q+1, D]``. Layers before ``layer`` run for all
        queries (the QA query attends to the others' states), layer ``layer`` for the QA query
        alone, and the later layers not at all.
        """
        answer_layer = range(len(self.layers))[layer]
        tgt = torch.zeros_like(query_pos)
        for before in self.layers[:answer_layer]:
            tgt, _ = before.focus_step(tgt, query_pos, memory, need_attention=False)
        tgt, _ = self.layers[answer_layer].focus_step(
            tgt, query_pos, memory, need_attention=False, rows=slice(-1, None)
        )
        return self.norm(tgt[:, 0])
