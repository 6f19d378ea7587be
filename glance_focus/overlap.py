"""Decoding and encoding at the same time, without the two fighting over the CPU cores.

A video's frames come from a decoder (a worker process, :class:`~glance_focus.video.FrameStream`)
while the image encoder turns the ones already decoded into features. On a GPU the encoder needs
little CPU, so the decoder may use every core. On a CPU both compete for the same few cores: a
decoder thread beside an encoder using every core leaves more runnable threads than cores, and
the encoder's threads, which wait for one another after every operation, then stall whenever one
of them is descheduled (measured on 2 busy cores: ViT-B-32 at 2 threads ran 3x slower than at 1).
So there the budget is explicit: the decoder gets one thread, the encoder the other cores while
decoding lasts, and the work left after it is shared by one single-threaded *lane* per core
(independent encoder calls never wait for one another, unlike one call's threads). When decoding
is the larger job (a high-resolution video: :func:`encode_cost_for` compared with the decoding
work once the video is probed) the decoder takes every core instead and the encoder one thread.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from glance_focus.encoders import FrameEncoder
from glance_focus.video import FrameStream

BATCH_WHILE_DECODING = 4
"""Frames the encoder takes at a time while the decoder runs: waiting for fewer wastes the CPU
encoder, taking more delays the switch to every core when decoding ends (on the CPU the batch
being encoded then holds one core, the other idles)."""


ENCODE_COST_VIT_B_32 = {"bf16": 35.0, "fp32": 60.0, "fp16": 60.0}
"""ViT-B-32's cost per frame on one CPU thread, in frames of one megapixel decoded on one thread
(H.264). Measured on a 2-core AVX-512-BF16 EPYC: 52 ms per frame in bf16, 1.5 ms per decoded
megapixel; fp32 runs about 1.7x slower."""
_VIT_B_32_SIZE = 87_849_216 * 50  # parameters x tokens of ViT-B-32's visual tower


def cpu_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def decoder_threads_for(encoder: FrameEncoder) -> int:
    """Decoder threads to run beside ``encoder``: 1 when it computes on the CPU (the other cores
    are the encoder's), else 0 (FFmpeg's choice: every core)."""
    return 1 if encoder.device.type == "cpu" and cpu_cores() > 1 else 0


def encode_cost_for(encoder: FrameEncoder) -> float | None:
    """``encoder``'s cost per frame for :func:`~glance_focus.video.decoder_threads_beside_encoder`
    (None off the CPU, or for an encoder that is not an open_clip ViT: the decoder then takes every
    core): ViT-B-32's, scaled by parameters x tokens (a proxy for multiply-adds)."""
    visual = getattr(encoder, "visual", None)  # open_clip's ViTs; None for other encoders
    if encoder.device.type != "cpu" or visual is None:
        return None
    grid = getattr(visual, "grid_size", (7, 7))
    size = sum(p.numel() for p in visual.parameters()) * (grid[0] * grid[1] + 1)
    return ENCODE_COST_VIT_B_32.get(encoder.precision, 60.0) * size / _VIT_B_32_SIZE


@contextlib.contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """Run the calling thread's torch operations on ``count`` threads, restoring the old count after.

    With torch's OpenMP backend the count belongs to the calling thread (and to threads started
    while it is set); other running threads keep theirs.
    """
    previous = torch.get_num_threads()
    if count == previous:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def encode_single_threaded(encoder: FrameEncoder, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``encoder.encode(frames)`` on one intra-op thread (one lane)."""
    with intra_op_threads(1):
        return encoder.encode(frames)


def encode_in_lanes(encoder: FrameEncoder, frames: np.ndarray, lanes: int) -> torch.Tensor:
    """``encoder.encode(frames)`` ``[N, H, W, 3]`` → ``[N, F]``, split over ``lanes`` threads that each
    encode their contiguous share on one intra-op thread (1 lane: the encoder's own threads)."""
    lanes = min(lanes, len(frames))
    if lanes <= 1:
        return encoder.encode(frames)
    shares = np.array_split(frames, lanes)
    with ThreadPoolExecutor(lanes, thread_name_prefix="encode-lane") as pool:
        return torch.cat(list(pool.map(lambda share: encode_single_threaded(encoder, share), shares)))


def encode_stream(encoder: FrameEncoder, stream: FrameStream) -> tuple[torch.Tensor, float]:
    """Encode a stream's frames while it decodes: ``(features [N, F] float32 on CPU, seconds the
    encoder computed)``. The stream ends closed. Equal to ``encoder.encode(stream.result().frames)``
    up to the reduced-precision rounding of different batch sizes."""
    on_cpu = encoder.device.type == "cpu"
    cores = cpu_cores()
    # Beside a one-thread decoder the encoder has the other cores; beside one using them all, one.
    encoder_threads = max(1, cores - 1) if stream.decoder_threads == 1 else 1
    batch_size = BATCH_WHILE_DECODING if on_cpu else encoder.batch_size
    features: list[torch.Tensor] = []
    busy = 0.0
    encoded = 0
    with stream:
        while not stream.done:
            # Wait for a few frames (or the end), then take every frame decoded so far.
            while stream.poll() - encoded < BATCH_WHILE_DECODING and not stream.done:
                stream.poll(block=True)
            if stream.done:
                break
            batch = stream.frames[encoded : min(stream.decoded, encoded + batch_size)]
            started = time.perf_counter()
            with intra_op_threads(encoder_threads) if on_cpu else contextlib.nullcontext():
                features.append(encoder.encode(batch))
            busy += time.perf_counter() - started
            encoded += len(batch)
        rest = stream.frames[encoded:]
        if len(rest):
            started = time.perf_counter()
            features.append(encode_in_lanes(encoder, rest, cores if on_cpu else 1))
            busy += time.perf_counter() - started
    return torch.cat(features), busy
