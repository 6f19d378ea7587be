"""Frames from scene states, and H.264 video writing.

Drawing is vectorised over all frames of a video at once: a plain background and one
anti-aliased disc. Grow and shrink ramp the disc's *area* linearly over the event span, so the
amount of object colour (what the encoder perceives as size) changes at a constant rate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from glance_focus.synthetic.world import Scene, WorldConfig

#: Encoder settings: H.264 in yuv420p (plays in every browser) at a very low CRF so that the
#: palette survives compression; one thread so that the bytes do not depend on scheduling.
#: The muxer runs bit-exact (no library version tag): importing decord before av makes PyAV
#: resolve to decord's bundled FFmpeg, whose version differs, and the files must not depend on it.
VIDEO_CODEC = "libx264"
VIDEO_PIX_FMT = "yuv420p"
VIDEO_OPTIONS: dict[str, str] = {"crf": "8", "preset": "veryfast", "threads": "1"}


@dataclass(frozen=True)
class FrameLayers:
    """Per-frame drawing parameters of a scene; ``N`` = number of frames.

    Attributes:
        background: ``[N, 3]`` uint8 background RGB.
        colour: ``[N, 3]`` uint8 object RGB (meaningless where ``radius`` is 0).
        radius: ``[N]`` float32 disc radius in pixels, 0 when no object is present.
        centre: ``[N, 2]`` float32 disc centre ``(x, y)`` in pixels.
    """

    background: np.ndarray
    colour: np.ndarray
    radius: np.ndarray
    centre: np.ndarray


def frame_layers(scene: Scene, config: WorldConfig) -> FrameLayers:
    """What every frame of ``scene`` shows (see :class:`FrameLayers`)."""
    n = scene.num_frames
    background = np.zeros((n, 3), np.uint8)
    colour = np.zeros((n, 3), np.uint8)
    radius = np.zeros(n, np.float32)
    centre = np.zeros((n, 2), np.float32)
    bounds = [0] + [e.start for e in scene.events] + [n]
    states = [scene.initial] + [e.after for e in scene.events]
    for state, lo, hi in zip(states, bounds[:-1], bounds[1:], strict=True):
        background[lo:hi] = config.background_rgb(state.background)
        if state.present:
            colour[lo:hi] = config.object_rgb(state.colour)
            radius[lo:hi] = config.radii[state.size]
            centre[lo:hi] = state.centre
    for event in scene.events:
        if event.cls.kind in ("grow", "shrink"):
            # Progress reaches 1 on the span's last frame; the first frame already shows a step.
            progress = np.arange(1, event.end - event.start + 1, dtype=np.float32) / (event.end - event.start)
            area0 = config.radii[event.before.size] ** 2
            area1 = config.radii[event.after.size] ** 2
            radius[event.start : event.end] = np.sqrt(area0 + (area1 - area0) * progress)
    return FrameLayers(background, colour, radius, centre)


def render_frames(scene: Scene, config: WorldConfig, indices: np.ndarray | None = None) -> np.ndarray:
    """Render a scene in memory.

    Args:
        scene: the scene to draw.
        config: the world it belongs to.
        indices: optional frame indices to render (e.g. a uniform sample); all frames if None.

    Returns:
        ``[N, H, W, 3]`` uint8 RGB frames, ``H = W = config.frame_size``.
    """
    layers = frame_layers(scene, config)
    if indices is None:
        indices = np.arange(scene.num_frames)
    # Scenes hold each state for many frames: draw every distinct frame once, then index.
    keys = np.concatenate(
        [layers.background, layers.colour, layers.radius[:, None], layers.centre], axis=1, dtype=np.float32
    )[indices]
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    background, colour = unique[:, 0:3], unique[:, 3:6]
    radius, centre = unique[:, 6], unique[:, 7:9]
    grid = np.arange(config.frame_size, dtype=np.float32) + 0.5  # pixel centres
    dx = grid[None, None, :] - centre[:, 0, None, None]
    dy = grid[None, :, None] - centre[:, 1, None, None]
    dist = np.sqrt(dx**2 + dy**2)  # [U, H, W]
    # One-pixel-wide soft edge: coverage of each pixel by the disc.
    alpha = np.clip(radius[:, None, None] - dist + 0.5, 0.0, 1.0)[..., None]  # [U, H, W, 1]
    background = background[:, None, None, :]
    frames = np.rint(background + alpha * (colour[:, None, None, :] - background)).astype(np.uint8)
    return frames[inverse.reshape(-1)]


def write_video(frames: np.ndarray, path: str | os.PathLike[str], fps: int) -> None:
    """Write ``[N, H, W, 3]`` uint8 RGB frames as an H.264 mp4, atomically.

    The file appears at ``path`` only when complete (written to a temporary name in the same
    folder, then renamed), so an interrupted run never leaves a truncated video behind.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.mp4")
    try:
        with av.open(str(tmp), mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
            stream = container.add_stream(VIDEO_CODEC, rate=fps)
            stream.width = frames.shape[2]
            stream.height = frames.shape[1]
            stream.pix_fmt = VIDEO_PIX_FMT
            stream.options = dict(VIDEO_OPTIONS)
            stream.codec_context.thread_count = 1
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
