"""Glance-Focus: memory prompting for multi-event video question answering (NeurIPS 2023).

The library has no UI dependency. Main entry points:

- :class:`glance_focus.config.GlanceFocusConfig` and :class:`glance_focus.model.GlanceFocus`
- :mod:`glance_focus.losses` (supervised and unsupervised criteria), :mod:`glance_focus.matcher`
- :mod:`glance_focus.checkpoint` (save / load / convert reference checkpoints)
"""

__version__ = "0.1.0"
