"""Load test: many concurrent API users, then a long sequential run that looks for memory leaks.

    python benchmarks/load_test.py [--clients 50] [--requests-per-client 2] [--sequential 500]
                                   [--checkpoint DIR] [--time-limit 600]

Launches ``app.py`` in a subprocess on a free loopback port with its own feature cache and
temporary folders, then:

1. **concurrent**: ``--clients`` ``gradio_client`` sessions start at once, each sending
   ``--requests-per-client`` requests, mixed: a new video (small distinct H.264 clips made here
   with PyAV, so decoding and the frame encoder run), a repeated video (feature-cache hit) and a
   bad file (text renamed ``.mp4``). Each request ends as *answered*, *refused* (the bad file's
   clear message), *rejected* (the queue was full: a clean refusal) or *failed* (anything else,
   including a timeout); latency percentiles are over answered requests.
2. **sequential**: ``--sequential`` requests one after another (repeated videos, a new question
   each time, every tenth a bad file). The server's resident memory is read after a warm-up of
   ``--warm-up`` requests and at the end; the growth must stay below 10%.

Throughout, the server's peak RSS (and its decoding workers') is sampled from ``/proc`` (or
psutil when installed). Temporary files are counted before and after in gradio's upload folder,
the server's ``TMPDIR`` and the video workers' scratch folders. Every request has a timeout and
the whole run a wall-clock limit. The last line printed is one JSON object with the figures; the
exit status is 1 when a check fails (failed requests, RSS growth >= 10%, temporary files growing).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "assets" / "models" / "synthetic-sup"
OPTIONS = "The object grew.\nThe object shrank.\nA blue object appeared."
BAD_FILE_WORDS = "not a video"
VIDEO_SCRATCH_GLOBS = ("/dev/shm/glance_focus_video_*", "{tmp}/glance_focus_video_*")
MAX_RSS_GROWTH = 0.10


# ----------------------------------------------------------------------------------------------
# Inputs


def make_video(path: Path, seed: int, frames: int = 48, size: tuple[int, int] = (160, 96)) -> Path:
    """A small distinct H.264 clip: a disc whose colour and position depend on ``seed``."""
    import av

    width, height = size
    rng = np.random.default_rng(seed)
    colour = rng.integers(0, 256, 3)
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            image = np.full((height, width, 3), 30, np.uint8)
            cx, cy = (i * 3 + seed * 7) % width, height // 2
            image[(xx - cx) ** 2 + (yy - cy) ** 2 < (10 + i % 8) ** 2] = colour
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def checkpoint_for(args: argparse.Namespace, work: Path) -> Path:
    """``--checkpoint``, else the bundled model, else an untrained one (the pipeline's cost is the same)."""
    if args.checkpoint:
        return args.checkpoint
    if (BUNDLED / "config.json").is_file():
        return BUNDLED
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_pipeline import random_checkpoint

    return random_checkpoint(work / "ckpt")


# ----------------------------------------------------------------------------------------------
# The server and its resources


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (0 once it is gone)."""
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss
    except ImportError:
        pass
    except Exception:
        return 0
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def children(pid: int) -> list[int]:
    """Direct child processes (the video decoding workers)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as file:
            return [int(p) for p in file.read().split()]
    except OSError:
        return []


class Server:
    """``app.py`` in a subprocess on a free loopback port with its own cache and temporary folders."""

    def __init__(self, checkpoint: Path, work: Path, start_timeout_s: float = 300) -> None:
        self.work = work
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.tmp = work / "tmp"
        self.uploads = work / "gradio"
        for folder in (self.tmp, self.uploads):
            folder.mkdir(parents=True, exist_ok=True)
        self.scratch_before = self._scratch_dirs()
        env = {
            **os.environ,
            "TMPDIR": str(self.tmp),
            "GRADIO_TEMP_DIR": str(self.uploads),
            "GRADIO_EXAMPLES_CACHE": str(work / "examples"),
            "GRADIO_ANALYTICS_ENABLED": "False",
            "HF_HUB_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "PYTHONUNBUFFERED": "1",
        }
        command = [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--checkpoint", str(checkpoint), "--device", "cpu", "--cache-dir", str(work / "cache")]
        self.log = open(work / "server.log", "wb")  # noqa: SIM115 (open for the server's lifetime)
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.peak_rss = 0
        self.peak_workers_rss = 0
        self._stop = threading.Event()
        self._wait_until_up(start_timeout_s)
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _wait_until_up(self, timeout_s: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the app exited ({self.process.returncode}); see {self.work / 'server.log'}")
            try:
                if httpx.get(f"{self.url}config", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the app did not start within {timeout_s:.0f} s")

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak_rss = max(self.peak_rss, rss_bytes(self.process.pid))
            workers = sum(rss_bytes(child) for child in children(self.process.pid))
            self.peak_workers_rss = max(self.peak_workers_rss, workers)

    @property
    def rss(self) -> int:
        return rss_bytes(self.process.pid)

    def _scratch_dirs(self) -> set[str]:
        return {d for pattern in VIDEO_SCRATCH_GLOBS for d in glob.glob(pattern.format(tmp=self.tmp))}

    def temp_files(self) -> dict[str, int]:
        """Files now in gradio's upload folder (uploaded videos, one folder per content hash, and
        loose files), the server's ``TMPDIR``, and its video scratch folders (frames; the live
        workers' logs are not counted)."""
        uploads = [p for p in self.uploads.rglob("*") if p.is_file()]
        scratch = [
            name
            for folder in self._scratch_dirs() - self.scratch_before
            for name in os.listdir(folder)
            if not name.startswith("worker-")
        ]
        return {
            "gradio_uploaded_videos": sum(p.parent != self.uploads for p in uploads),
            "gradio_loose_files": sum(p.parent == self.uploads for p in uploads),
            "tmpdir": sum(len(files) for _, _, files in os.walk(self.tmp)),
            "video_scratch": len(scratch),
        }

    def wait_idle(self, timeout_s: float = 120) -> None:
        """Until the queue is empty (requests abandoned by timed-out clients finish)."""
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = httpx.get(f"{self.url}gradio_api/queue/status", timeout=5).json()
            if status.get("queue_size", 0) == 0:
                return
            time.sleep(0.5)

    def stop(self) -> None:
        self._stop.set()
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


# ----------------------------------------------------------------------------------------------
# Requests


@dataclass
class Outcome:
    kind: str
    """answered, refused, rejected or failed."""
    seconds: float
    detail: str = ""


@dataclass
class Tally:
    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)

    def summary(self) -> dict:
        counts = Counter(o.kind for o in self.outcomes)
        latencies = sorted(o.seconds for o in self.outcomes if o.kind == "answered")
        failures = Counter(o.detail[:160] for o in self.outcomes if o.kind == "failed")
        return {
            "requests": len(self.outcomes),
            **{kind: counts.get(kind, 0) for kind in ("answered", "refused", "rejected", "failed")},
            "latency_s": percentiles(latencies),
            "failures": dict(failures.most_common(5)),
        }


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    qs = np.percentile(values, [50, 90, 99])
    return {"p50": round(qs[0], 3), "p90": round(qs[1], 3), "p99": round(qs[2], 3), "max": round(max(values), 3)}


def request(client: object, video: Path, question: str, bad: bool, timeout_s: float) -> Outcome:
    """One ``/predict`` call, classified."""
    from gradio_client import handle_file

    started = time.perf_counter()
    try:
        job = client.submit(handle_file(str(video)), question, OPTIONS, api_name="/predict")
        result = job.result(timeout=timeout_s)
    except Exception as error:  # every outcome is recorded, none ends the run
        seconds = time.perf_counter() - started
        message = f"{type(error).__name__}: {error}"
        if "queue is full" in message.lower():
            return Outcome("rejected", seconds, message)
        if bad and BAD_FILE_WORDS in message:
            return Outcome("refused", seconds)
        return Outcome("failed", seconds, message)
    seconds = time.perf_counter() - started
    if bad or result.get("answer") not in OPTIONS.splitlines():
        return Outcome("failed", seconds, f"unexpected result {str(result)[:120]}")
    return Outcome("answered", seconds)


def concurrent_phase(
    url: str, clients: int, per_client: int, new: list[Path], repeated: Path, bad: Path, timeout_s: float
) -> Tally:
    """``clients`` sessions start together; request j of client i is new / repeated / bad by (i + j) % 3."""
    from gradio_client import Client

    tally = Tally()
    barrier = threading.Barrier(clients)

    def session(index: int) -> None:
        try:
            client = Client(url, verbose=False)
        except Exception as error:
            barrier.abort()
            tally.add(Outcome("failed", 0.0, f"connect: {error}"))
            return
        with contextlib.suppress(threading.BrokenBarrierError):  # start anyway
            barrier.wait(timeout=timeout_s)
        for j in range(per_client):
            kind = (index + j) % 3
            video = {0: new[(index * per_client + j) % len(new)], 1: repeated, 2: bad}[kind]
            tally.add(request(client, video, f"What happened first in clip {index}.{j}?", kind == 2, timeout_s))
        client.close()

    threads = [threading.Thread(target=session, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    end = time.monotonic() + timeout_s * (per_client + 1)
    for thread in threads:
        thread.join(timeout=max(0.0, end - time.monotonic()))
    with tally.lock:
        missing = clients * per_client - len(tally.outcomes)
        tally.outcomes += [Outcome("failed", timeout_s, "session did not finish")] * missing
    return tally


def sequential_phase(
    url: str, count: int, warm_up: int, videos: list[Path], bad: Path, server: Server, timeout_s: float, deadline: float
) -> tuple[Tally, dict]:
    """``count`` requests one after another; RSS after ``warm_up`` of them and at the end."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    tally = Tally()
    rss_warm = None
    trace: list[int] = []
    for i in range(count):
        if time.monotonic() > deadline:
            break
        is_bad = i % 10 == 9
        video = bad if is_bad else videos[i % len(videos)]
        tally.add(request(client, video, f"What happened just before event {i}?", is_bad, timeout_s))
        if i + 1 == warm_up:
            rss_warm = server.rss
        if (i + 1) % 50 == 0:
            trace.append(server.rss)
    client.close()
    rss_end = server.rss
    growth = (rss_end - rss_warm) / rss_warm if rss_warm else None
    memory = {
        "rss_after_warm_up_mb": round(rss_warm / 2**20, 1) if rss_warm else None,
        "rss_end_mb": round(rss_end / 2**20, 1),
        "rss_growth": round(growth, 4) if growth is not None else None,
        "rss_every_50_mb": [round(r / 2**20, 1) for r in trace],
    }
    return tally, memory


# ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50, help="concurrent sessions (default 50)")
    parser.add_argument("--requests-per-client", type=int, default=2, help="requests per session (default 2)")
    parser.add_argument("--sequential", type=int, default=500, help="requests in the leak phase (default 500)")
    parser.add_argument("--warm-up", type=int, default=50, help="leak phase: requests before the RSS baseline")
    parser.add_argument("--new-videos", type=int, default=20, help="distinct small videos made for the run")
    parser.add_argument("--checkpoint", type=Path, help=f"default: {BUNDLED.relative_to(ROOT)} if present")
    parser.add_argument("--request-timeout", type=float, default=180.0, help="seconds one request may take")
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds for the whole run")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (server log, caches)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from gradio_client import Client

    args = parse_args(argv)
    started = time.monotonic()
    deadline = started + args.time_limit
    work = Path(tempfile.mkdtemp(prefix="glance_focus_load_"))
    server = None
    try:
        checkpoint = checkpoint_for(args, work)
        inputs = work / "inputs"
        inputs.mkdir()
        new = [make_video(inputs / f"new_{i:03d}.mp4", seed=i) for i in range(args.new_videos)]
        repeated = make_video(inputs / "repeated.mp4", seed=10_000)
        leak_videos = [make_video(inputs / f"leak_{i}.mp4", seed=20_000 + i) for i in range(4)]
        bad = inputs / "notes.mp4"
        bad.write_bytes(b"these are my notes, not a video\n" * 64)

        server = Server(checkpoint, work)
        rss_idle = server.rss
        print(f"server up at {server.url} (pid {server.process.pid}, {rss_idle / 2**20:.0f} MB)", file=sys.stderr)
        # One request of each kind first, so the phases measure a warm server.
        prime, client = Tally(), Client(server.url, verbose=False)
        for video, is_bad in ((repeated, False), (bad, True), *((v, False) for v in leak_videos)):
            prime.add(request(client, video, "What happened?", is_bad, args.request_timeout))
        client.close()
        files_start = server.temp_files()

        began = time.monotonic()
        concurrent = concurrent_phase(
            server.url, args.clients, args.requests_per_client, new, repeated, bad, args.request_timeout
        )
        concurrent_s = time.monotonic() - began
        server.wait_idle()
        files_after_concurrent = server.temp_files()
        print(f"concurrent phase: {json.dumps(concurrent.summary())}", file=sys.stderr)

        began = time.monotonic()
        sequential, memory = sequential_phase(
            server.url, args.sequential, args.warm_up, leak_videos, bad, server, args.request_timeout, deadline
        )
        sequential_s = time.monotonic() - began
        files_end = server.temp_files()
        print(f"sequential phase: {json.dumps(sequential.summary())} {json.dumps(memory)}", file=sys.stderr)

        leak_ok = memory["rss_growth"] is not None and memory["rss_growth"] < MAX_RSS_GROWTH
        # The sequential phase uploads only videos sent before, so no temporary file should appear.
        temp_ok = all(files_end[k] <= files_after_concurrent[k] for k in files_end)
        scratch_ok = files_end["video_scratch"] == 0 and files_end["tmpdir"] == 0
        failed = concurrent.summary()["failed"] + sequential.summary()["failed"] + prime.summary()["failed"]
        report = {
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
            "checkpoint": str(checkpoint),
            "clients": args.clients,
            "requests_per_client": args.requests_per_client,
            "concurrent": {**concurrent.summary(), "seconds": round(concurrent_s, 1)},
            "sequential": {**sequential.summary(), "seconds": round(sequential_s, 1), **memory},
            "server_rss_idle_mb": round(rss_idle / 2**20, 1),
            "server_peak_rss_mb": round(server.peak_rss / 2**20, 1),
            "video_workers_peak_rss_mb": round(server.peak_workers_rss / 2**20, 1),
            "temp_files": {"start": files_start, "after_concurrent": files_after_concurrent, "end": files_end},
            "checks": {
                "no_failed_requests": failed == 0,
                "rss_growth_below_10pct": leak_ok,
                "temp_files_do_not_grow": temp_ok,
                "video_scratch_and_tmpdir_empty": scratch_ok,
            },
            "seconds": round(time.monotonic() - started, 1),
        }
    finally:
        if server is not None:
            server.stop()
        if args.keep:
            print(f"work folder kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report))
    return 0 if all(report["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
