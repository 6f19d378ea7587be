"""Hugging Face ZeroGPU: the app across the real ``spaces`` package's fork boundary.

``spaces`` (0.51) wraps a ``spaces.GPU`` function, on a ZeroGPU Space only, so that each call asks
the Hub's device service for a GPU, forks a worker process from the server, pickles the arguments
to it, runs the function there and pickles the result (or the exception: a ``gr.Error`` as itself,
anything else as "ZeroGPU worker error") back. Here that wrapper runs for real — the real
``spaces.GPU``, a real fork, real pickling, its own exception conversion — with only what needs the
Hub stubbed: the device service's client (schedule / allow / release) and the moving of CUDA
tensors (there is no GPU). The app runs in ZeroGPU mode (``SPACES_ZERO_GPU=true``).

Every process that probes, hashes or decodes a video, and that answers, writes its pid to a log,
so the tests see where each step ran.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import types
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import gradio as gr
import pytest

pytest.importorskip("spaces", reason="the Hugging Face `spaces` package is not installed")

import spaces
import spaces.config
import spaces.zero.client
import spaces.zero.decorator
import spaces.zero.torch

import glance_focus.pipeline
from glance_focus.app import zerogpu
from glance_focus.app.answering import Answerer
from glance_focus.app.inspect_tab import Inspector
from glance_focus.app.messages import UNEXPECTED_ERROR
from glance_focus.app.models import Models
from glance_focus.forksafe import ForkSafeLock
from glance_focus.pipeline import InputError, Predictor
from glance_focus.video import default_pool
from tests.test_pipeline import make_checkpoint, sample_video

OPTIONS = "a bike passes\nit rains"


@pytest.fixture
def zero_gpu_space(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[timedelta]]:
    """ZeroGPU mode with the real ``spaces.GPU`` wrapper; yields the durations it asked for."""
    asked: list[timedelta] = []

    def schedule(task_id: int, request: object, duration: timedelta | None, gpu_size: object) -> object:
        asked.append(duration)
        return types.SimpleNamespace(allowToken="token", nvidiaIndex=0, nvidiaUUID="GPU-0", idle=True)

    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setattr(spaces.config.Config, "zero_gpu", True)
    monkeypatch.setattr(spaces.zero.client, "schedule", schedule)
    for name in ("allow", "release", "duration_warning"):
        monkeypatch.setattr(spaces.zero.client, name, lambda *args, **kwargs: None)
    monkeypatch.setattr(spaces.zero.client, "get_duration_seconds", lambda duration, size: 60.0)
    for name in ("unpatch", "init", "move"):
        monkeypatch.setattr(spaces.zero.torch, name, lambda *args, **kwargs: None)
    monkeypatch.setattr(spaces.zero.torch, "size", lambda: 0)
    before = set(multiprocessing.active_children())
    yield asked
    spaces.zero.decorator.decorated_cache.clear()
    for worker in set(multiprocessing.active_children()) - before:  # the GPU workers this test forked
        worker.kill()  # (their SIGTERM handler only closes their queue)
        worker.join(10)


@pytest.fixture
def steps_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file to which hashing, decoding and answering append ``step pid`` (from any process)."""
    log = tmp_path / "steps.log"
    log.touch()

    def logged(step: str, fn):
        def call(*args, **kwargs):
            with open(log, "a") as file:
                file.write(f"{step} {os.getpid()}\n")
            return fn(*args, **kwargs)

        return call

    monkeypatch.setattr(
        glance_focus.pipeline, "video_content_hash", logged("hash", glance_focus.pipeline.video_content_hash)
    )
    monkeypatch.setattr(glance_focus.pipeline, "sample_frames", logged("decode", glance_focus.pipeline.sample_frames))
    monkeypatch.setattr(Predictor, "_answer_prepared", logged("answer", Predictor._answer_prepared))
    return log


def _steps(log: Path) -> list[tuple[str, int]]:
    return [(step, int(pid)) for step, pid in (line.split() for line in log.read_text().splitlines())]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("zerogpu") / "tiny")


def _models(checkpoint: Path, cache: Path) -> tuple[Models, str]:
    models = Models([checkpoint], device="cpu", cache_dir=cache)
    assert models.default is not None
    return models, models.default


@pytest.mark.parametrize("value", ["true", "True", "TRUE", "1", "t", "false", "False", "0", "", "no", "yes", None])
def test_zerogpu_env_is_read_as_spaces_reads_it(value: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    if value is None:
        monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    else:
        monkeypatch.setenv("SPACES_ZERO_GPU", value)
    assert zerogpu.zero_gpu() is spaces.config.boolean(os.environ.get("SPACES_ZERO_GPU"))
    assert zerogpu.zero_gpu() is (value is not None and value.lower() in ("true", "1", "t"))


def test_zerogpu_off_the_real_spaces_gpu_is_the_function_itself(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    models, name = _models(checkpoint, tmp_path / "features")
    answerer = Answerer(models)
    assert answerer._answer_on_gpu == answerer.answer_prepared  # no fork, no scheduling
    assert answerer(name, str(sample_video("bikes.mp4")), "What happens?", OPTIONS).answer in OPTIONS.split("\n")


def test_zerogpu_answers_in_a_forked_worker_that_decodes_nothing(
    zero_gpu_space: list[timedelta], steps_log: Path, checkpoint: Path, tmp_path: Path
) -> None:
    models, name = _models(checkpoint, tmp_path / "features")
    answerer = Answerer(models)
    video = str(sample_video("bikes.mp4"))

    first = answerer(name, video, "What happens?", OPTIONS)
    assert (
        first.answer in OPTIONS.split("\n") and len(first.events) == models.choices[name].info.model.num_memory_prompts
    )
    steps = _steps(steps_log)
    server = os.getpid()
    assert {pid for step, pid in steps if step in ("hash", "decode")} == {server}
    answered = [pid for step, pid in steps if step == "answer"]
    assert len(answered) == 1 and answered[0] != server  # answered in the forked worker
    assert [step for step, _ in steps].count("decode") == 1

    # The worker's features came back and went into the server's feature cache: no decoding the second time.
    second = answerer(name, video, "Does it rain?", "yes\nno")
    assert second.timings.feature_cache_hit and [step for step, _ in _steps(steps_log)].count("decode") == 1
    # The duration asked for follows the work: frames to encode the first time, none the second.
    assert len(zero_gpu_space) == 2 and zero_gpu_space[1] < zero_gpu_space[0] <= timedelta(seconds=60)
    assert zero_gpu_space[0] == timedelta(seconds=zerogpu.gpu_duration_s(8, "ViT-B-32:random-seed0"))


@pytest.mark.parametrize(
    ("question", "options", "video", "expected"),
    [
        ("", OPTIONS, "bikes.mp4", "Please type a question."),
        ("What?", "only one", "bikes.mp4", "give at least two"),
        ("What?", OPTIONS, "not-a-video", "not a video"),
        ("What?", OPTIONS, "empty", "empty"),
    ],
)
def test_zerogpu_mistakes_before_the_gpu_read_as_off_zerogpu(
    zero_gpu_space: list[timedelta],
    steps_log: Path,
    checkpoint: Path,
    tmp_path: Path,
    question: str,
    options: str,
    video: str,
    expected: str,
) -> None:
    if video == "not-a-video":
        path = tmp_path / "holiday.mp4"
        path.write_bytes(b"%PDF-1.4 not a video at all" * 100)
    elif video == "empty":
        path = tmp_path / "empty.mp4"
        path.touch()
    else:
        path = sample_video(video)
    models, name = _models(checkpoint, tmp_path / "features")
    with pytest.raises(gr.Error) as raised:
        Answerer(models)(name, str(path), question, options)
    assert expected in raised.value.message and "ZeroGPU" not in raised.value.message
    assert zero_gpu_space == []  # refused before asking for a GPU
    assert "answer" not in [step for step, _ in _steps(steps_log)]


def test_zerogpu_a_mistake_raised_inside_the_gpu_function_crosses_the_fork_as_its_message(
    zero_gpu_space: list[timedelta], steps_log: Path, checkpoint: Path, tmp_path: Path
) -> None:
    models, name = _models(checkpoint, tmp_path / "features")
    answerer = Answerer(models)
    predictor = models.predictor(name)
    predictor.warm_up()
    prepared = predictor.prepare(sample_video("bikes.mp4"))
    with pytest.raises(gr.Error) as raised:  # the GPU function checks the question again, in the worker
        answerer._answer_on_gpu(name, prepared, "", ["a", "b"])
    assert raised.value.message == "Please type a question."
    assert {pid for step, pid in _steps(steps_log) if step == "answer"} - {os.getpid()}


def test_zerogpu_an_unexpected_error_inside_reads_as_the_apps_message_not_the_workers(
    zero_gpu_space: list[timedelta], checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Predictor, *args: object) -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(Predictor, "_answer_prepared", broken)  # the forked worker inherits it
    models, name = _models(checkpoint, tmp_path / "features")
    with pytest.raises(gr.Error) as raised:
        Answerer(models)(name, str(sample_video("bikes.mp4")), "What happens?", OPTIONS)
    assert raised.value.message == UNEXPECTED_ERROR


def test_zerogpu_a_person_mistake_found_by_the_model_inside_reaches_the_page_as_is(
    zero_gpu_space: list[timedelta], checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: Predictor, *args: object) -> None:
        raise InputError("This video is too dark to answer about; try a brighter one.")

    monkeypatch.setattr(Predictor, "_answer_prepared", refuse)
    models, name = _models(checkpoint, tmp_path / "features")
    with pytest.raises(gr.Error) as raised:
        Answerer(models)(name, str(sample_video("bikes.mp4")), "What happens?", OPTIONS)
    assert raised.value.message == "This video is too dark to answer about; try a brighter one."


def test_zerogpu_worker_never_waits_on_a_lock_held_at_the_fork(
    zero_gpu_space: list[timedelta], checkpoint: Path, tmp_path: Path
) -> None:
    """Another request's thread holds every lock the GPU function could take while the worker forks."""
    models, name = _models(checkpoint, tmp_path / "features")
    answerer = Answerer(models)
    predictor = models.predictor(name)
    predictor.warm_up()
    prepared = predictor.prepare(sample_video("bikes.mp4"))
    locks = [models._lock, predictor._lock, predictor._fallback_lock, predictor.text._lock]
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        for lock in locks:
            lock.acquire()
        held.set()
        release.wait(60)
        for lock in locks:
            lock.release()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        prediction = answerer._answer_on_gpu(name, prepared, "What happens?", ["a bike passes", "it rains"])
        assert prediction.answer in ("a bike passes", "it rains")
    finally:
        release.set()
        holder.join()


def test_zerogpu_fork_safe_lock_is_free_in_a_child_while_held_in_the_parent() -> None:
    lock = ForkSafeLock()
    with lock:
        pid = os.fork()
        if pid == 0:  # the child: the lock another thread of the parent holds must not block it
            os._exit(0 if lock.acquire(timeout=5) else 1)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_zerogpu_a_forked_child_never_uses_or_stops_the_parents_decode_workers(tmp_path: Path) -> None:
    parent_pool = default_pool()
    parent_workers = parent_pool.worker_pids
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        ok = default_pool() is not parent_pool
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(pid, 0)
    assert answer == b"1"
    assert parent_pool.worker_pids == parent_workers
    assert parent_pool.probe(sample_video("bikes.mp4")).num_frames > 0  # the parent's workers still serve


def test_zerogpu_gpu_duration_follows_the_frames_and_the_encoder() -> None:
    small, large = zerogpu.gpu_duration_s(8, "ViT-B-32:openai"), zerogpu.gpu_duration_s(128, "ViT-L-14:openai")
    assert zerogpu.gpu_duration_s(0, "ViT-B-32:openai") <= small < large <= zerogpu.GPU_DURATION_S
    assert zerogpu.gpu_duration_s(10**6, "ViT-L-14:openai") == zerogpu.GPU_DURATION_S


def test_zerogpu_inspect_runs_on_the_cpu(zero_gpu_space: list[timedelta], checkpoint: Path, tmp_path: Path) -> None:
    models, _ = _models(checkpoint, tmp_path / "features")
    models.device = "cuda"  # what the ZeroGPU server process reports
    assert Inspector(models, [], tmp_path / "runs", tmp_path / "work").device == "cpu"
