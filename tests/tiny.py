"""Tiny model configs and inputs shared by the core-library tests."""

from __future__ import annotations

import dataclasses

import torch

from glance_focus.config import GlanceFocusConfig

TINY = GlanceFocusConfig(
    feature_dim=24,
    d_model=32,
    num_heads=4,
    ffn_dim=64,
    num_encoder_layers=2,
    num_decoder_layers=2,
    dropout=0.0,
    text_dropout=0.0,
    num_memory_prompts=6,
    num_event_classes=5,
    text_hidden_size=16,
)


def tiny_config(**changes) -> GlanceFocusConfig:
    return dataclasses.replace(TINY, **changes)


def random_inputs(config: GlanceFocusConfig, batch=2, frames=9, options=3, tokens=7, seed=0):
    """frames [B,T,F], text [B,O,L,H], text padding [B,O,L] (the last two tokens of option 0 padded)."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(batch, frames, config.feature_dim, generator=g)
    text = torch.randn(batch, options, tokens, config.text_hidden_size, generator=g)
    padding = torch.zeros(batch, options, tokens, dtype=torch.bool)
    padding[:, 0, -2:] = True
    return feats, text, padding
