"""Cost of the counterfactual evidence: the batched leave-one-out against one model forward.

    python benchmarks/bench_evidence.py [--checkpoint DIR] [--threads N [N ...]] [--repeats 30]

With the bundled model (Q = 10 memory prompts, 24 frames) and a bundled example question with its
four options, all on the CPU in fp32 and under ``torch.inference_mode``, it measures at each torch
thread count (by default 1, 2, 4, ... up to torch's default, which is what the app runs with; one
warm-up round, then medians of interleaved rounds, so that load on the machine hits every figure
alike):
- forward_s: one model forward, glance -> sort -> focus, as a prediction runs it (with the
  attention maps the plots show);
- forward_without_maps_s: the same forward with an answer-only focus (``need_attention=False``),
  for comparison with a forward that does no work for plots;
- leave_one_out_s: :func:`glance_focus.evidence.answer_without_each_prompt` on that forward's glance
  output: the Q answers without each prompt in one batched, answer-only focus pass (Q x O sequences);
- sequential_s: the same Q answers from Q separate answer-only focus calls (what batching saves).
Both sides of a ratio run with the same thread count. It prints one row per thread count with
``leave_one_out_s / forward_s`` (target <= 2), the machine's load average over the measurement,
and, as the last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "assets" / "models" / "synthetic-sup"
EXAMPLES = ROOT / "assets" / "examples" / "examples.json"
TARGET = 2.0


def interleaved_medians(tasks: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each task, run in turn ``repeats`` times after one warm-up round."""
    for task in tasks.values():
        task()
    runs: dict[str, list[float]] = {name: [] for name in tasks}
    for _ in range(repeats):
        for name, task in tasks.items():
            started = time.perf_counter()
            task()
            runs[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in runs.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=BUNDLED)
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        help="torch CPU thread counts to measure at (default: 1, 2, 4, ... up to torch's default)",
    )
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    thread_counts = args.threads or doubling_up_to(torch.get_num_threads())
    if min(thread_counts) < 1:
        parser.error("--threads must be at least 1")

    from glance_focus.checkpoint import load_checkpoint
    from glance_focus.evaluation import checkpoint_text_features
    from glance_focus.evidence import answer_without_each_prompt
    from glance_focus.text_features import question_sequences

    loaded = load_checkpoint(args.checkpoint, device=torch.device("cpu"))
    model = loaded.model.eval()
    num_prompts = model.config.num_memory_prompts
    example = json.loads(EXAMPLES.read_text(encoding="utf-8"))[0]
    text = checkpoint_text_features(loaded)
    text_hidden, text_padding = text.encode([question_sequences(example["question"], example["options"])])
    frames = torch.randn(
        1, loaded.info.num_frames, model.config.feature_dim, generator=torch.Generator().manual_seed(0)
    )

    with torch.inference_mode():
        prompts = model(frames, None, text_hidden, text_padding).sorted_memory_prompts
        keeps = [torch.tensor([j for j in range(num_prompts) if j != k]) for k in range(num_prompts)]

        def forward_without_maps() -> None:
            glance = model.glance(frames)
            sorted_prompts, _ = model.sort_memory_prompts(glance)
            model.focus(frames, None, sorted_prompts, text_hidden, text_padding, need_attention=False)

        def sequential() -> None:
            for keep in keeps:
                model.focus(
                    frames,
                    None,
                    prompts[:, keep],
                    text_hidden,
                    text_padding,
                    prompt_slots=keep[None],
                    need_attention=False,
                )

        tasks = {
            "forward": lambda: model(frames, None, text_hidden, text_padding),
            "forward_without_maps": forward_without_maps,
            "leave_one_out": lambda: answer_without_each_prompt(
                model, frames, None, prompts, text_hidden, text_padding
            ),
            "sequential": sequential,
        }
        rows = []
        for threads in thread_counts:
            torch.set_num_threads(threads)
            load_before = os.getloadavg()[0]
            medians = interleaved_medians(tasks, args.repeats)
            rows.append(row_for(threads, medians, (load_before, os.getloadavg()[0])))

    print(
        f"Q = {num_prompts} memory prompts, {text_hidden.shape[1]} options, {frames.shape[1]} frames, fp32, "
        f"{platform.processor() or platform.machine()} with {os.cpu_count()} CPUs; medians of {args.repeats} rounds"
    )
    print(
        f"threads | forward ms | forward, no maps ms | leave-one-out ms | {num_prompts} separate calls ms "
        f"| leave-one-out / forward (target <= {TARGET:g}) | load average"
    )
    for row in rows:
        print(
            f"{row['torch_threads']:7d} | {row['forward_s'] * 1e3:10.2f} | {row['forward_without_maps_s'] * 1e3:19.2f} "
            f"| {row['leave_one_out_s'] * 1e3:16.2f} | {row['sequential_s'] * 1e3:20.2f} "
            f"| {row['loo_over_forward']:5.2f} {'meets' if row['meets_target'] else 'misses'} "
            f"| {row['load_average_1min'][0]:.2f} -> {row['load_average_1min'][1]:.2f}"
        )
    report = {
        "target_loo_over_forward": TARGET,
        "meets_target_at_threads": [row["torch_threads"] for row in rows if row["meets_target"]],
        "by_threads": rows,
        "memory_prompts": num_prompts,
        "options": text_hidden.shape[1],
        "frames": frames.shape[1],
        "text_tokens": text_hidden.shape[2],
        "precision": "fp32",
        "device": "cpu",
        "device_name": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "repeats": args.repeats,
        "checkpoint": str(args.checkpoint),
    }
    print(json.dumps(report))


def doubling_up_to(limit: int) -> list[int]:
    """1, 2, 4, ... below ``limit``, then ``limit`` itself."""
    counts = [1]
    while counts[-1] * 2 < limit:
        counts.append(counts[-1] * 2)
    return counts if limit == 1 else [*counts, limit]


def row_for(threads: int, medians: dict[str, float], load: tuple[float, float]) -> dict[str, object]:
    """One thread count's figures: the medians and their ratios."""
    ratio = medians["leave_one_out"] / medians["forward"]
    return {
        "torch_threads": threads,
        "loo_over_forward": round(ratio, 3),
        "meets_target": ratio <= TARGET,
        "loo_over_forward_without_maps": round(medians["leave_one_out"] / medians["forward_without_maps"], 3),
        "sequential_over_loo": round(medians["sequential"] / medians["leave_one_out"], 3),
        **{f"{name}_s": round(value, 5) for name, value in medians.items()},
        "load_average_1min": [round(load[0], 2), round(load[1], 2)],
    }


if __name__ == "__main__":
    main()
