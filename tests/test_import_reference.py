"""``train/import_reference.py``: a reference-code checkpoint file in, a normal checkpoint directory out
(loaded by the Predictor like any other), and one-line errors for the mistakes a person makes.

The reference checkpoint is the reference_text fixture's (tiny RoBERTa inside, reference key names)
with its input projection widened to the frame encoder's width; the text encoder spec is a local
directory with the fixture's tokenizer and RoBERTa config.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from glance_focus.checkpoint import load_checkpoint, read_checkpoint_info
from glance_focus.pipeline import MAX_OPTION_CHARS, InputError, Predictor
from glance_focus.plots import attention_figure
from tests.test_reference_text import FIXTURE_DIR, write_text_encoder_dir
from train.evaluate import main as evaluate_main
from train.import_reference import main as import_main

ENCODER = "ViT-B-32:random-seed0"
ENCODER_WIDTH = 512
REFERENCE_ROWS = 80


def reference_tar(path: Path, feature_dim: int, seed: int = 0) -> Path:
    """The fixture's reference weights, input width ``feature_dim``, saved as the reference saves them."""
    tensors = load_file(str(FIXTURE_DIR / "reference_text.safetensors"))
    state = {k.removeprefix("weights."): v for k, v in tensors.items() if k.startswith("weights.")}
    d_model = state["input_proj.main.0.weight_v"].shape[0]
    generator = torch.Generator().manual_seed(seed)
    state["input_proj.main.0.weight_v"] = torch.randn(d_model, feature_dim, generator=generator) * 0.05
    torch.save({"model_state_dict": state, "global_step": 3000, "optimizer_state_dict": {}}, path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not (FIXTURE_DIR / "reference_text.json").is_file():
        pytest.skip(f"reference text fixture not found at {FIXTURE_DIR}")
    base = tmp_path_factory.mktemp("import")
    meta = json.loads((FIXTURE_DIR / "reference_text.json").read_text())
    mapping = base / "action_mapping.txt"
    mapping.write_text("".join(f"a{k:03d} event number {k}\n" for k in range(meta["config"]["event_pred_dim"] - 1)))
    return {
        "base": base,
        "tar": reference_tar(base / "model_3000.tar", ENCODER_WIDTH),
        "wide": reference_tar(base / "s3d_width.tar", 1024),
        "text": write_text_encoder_dir(FIXTURE_DIR, base / "tiny-roberta"),
        "events": mapping,
        "heads": meta["config"]["nhead"],
    }


def run_import(files: dict[str, Path], tar: Path, out: Path, *extra: str, text: str | None = None) -> int:
    argv = [str(tar), "--out", str(out), "--frame-encoder", ENCODER, "--events", str(files["events"])]
    argv += ["--text-encoder", text or str(files["text"]), "--num-heads", str(files["heads"]), *extra]
    return import_main(argv)


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def imported(files: dict[str, Path]) -> Path:
    out = files["base"] / "imported"
    assert run_import(files, files["tar"], out) == 0
    return out


def test_import_writes_a_checkpoint_the_predictor_loads(files: dict[str, Path], imported: Path) -> None:
    out = imported
    assert {p.name for p in out.iterdir()} == {
        "config.json",
        "model.safetensors",
        "text_encoder.safetensors",
        "MODEL_CARD.md",
    }
    info = read_checkpoint_info(out)
    assert info.frame_encoder == ENCODER and info.frame_encoder_fingerprint
    assert info.model.compat_text_padding and info.model.compat_float_masks and info.model.feature_dim == 512
    assert info.event_classes[0] == "event number 0"
    assert info.metadata["source"]["file"] == "model_3000.tar"
    card = (out / "MODEL_CARD.md").read_text()
    assert "one question per" in card and ENCODER in card and "model_3000.tar" in card
    # the fine-tuned text encoder is the checkpoint's, not the spec's (which has no weights at all)
    tensors = load_file(str(FIXTURE_DIR / "reference_text.safetensors"))
    stored = load_checkpoint(out).text_encoder_state
    assert stored is not None
    key = "embeddings.word_embeddings.weight"
    assert torch.equal(stored[key], tensors[f"weights.transformer.text_encoder.{key}"])

    predictor = Predictor(out, device="cpu")
    features = torch.randn(80, ENCODER_WIDTH, generator=torch.Generator().manual_seed(1))
    meta = json.loads((FIXTURE_DIR / "reference_text.json").read_text())
    prediction = predictor.predict_features(features, meta["questions"][0], meta["options"][0], duration_s=80.0)
    assert prediction.answer in meta["options"][0] and abs(sum(prediction.probabilities) - 1) < 1e-5
    assert len(prediction.events) == info.model.num_memory_prompts

    # the "event memory" of this layout is the last Q positions of [frames; prompts; text], padding included
    tokenizer = predictor.text.encoder.tokenizer
    lengths = [len(tokenizer(f"{meta['questions'][0]} {o}")["input_ids"]) for o in meta["options"][0]]
    keys = prediction.attention.question_memory_keys
    q = info.model.compat_event_memory_size
    assert keys is not None and len(keys) == q
    assert keys.count("<pad>") == min(q, max(lengths) - lengths[prediction.answer_index])
    figure = attention_figure(prediction)
    titles = [ax.get_title(loc="left") for ax in figure.axes]
    assert f"Focus: tokens → last {q} positions" in titles
    assert not any("→ prompts" in t for t in titles)

    # an option within the app's character limit but longer than the text encoder reads: refused, not truncated
    symbols = "~^|`<>{}[]#@$%&*+=\\"
    long_option = "".join(symbols[(k * 7) % len(symbols)] for k in range(MAX_OPTION_CHARS))
    if len(tokenizer(long_option)["input_ids"]) <= info.text_max_length:
        pytest.skip("this fixture's tokenizer reads the long option in few tokens")
    with pytest.raises(InputError, match="tokens long"):
        predictor.predict_features(features, meta["questions"][0], [long_option, "no"], duration_s=80.0)


def test_import_refuses_a_file_that_is_not_a_reference_checkpoint(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    ours = files["base"] / "not_reference.pth"
    torch.save({"model_state_dict": {"encoder.weight": torch.ones(3, 3)}}, ours)
    assert run_import(files, ours, files["base"] / "x") == 2
    assert "not a Glance-Focus reference checkpoint" in one_line_error(capsys)
    text = files["base"] / "notes.tar"
    text.write_text("hello")
    assert run_import(files, text, files["base"] / "x") == 2
    assert "is not a reference checkpoint" in one_line_error(capsys)
    assert not (files["base"] / "x").exists()


def test_import_refuses_an_encoder_of_another_width(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """A CLIP encoder (512-d) for a model trained on 1024-d S3D features."""
    assert run_import(files, files["wide"], files["base"] / "y") == 2
    error = one_line_error(capsys)
    assert "1024-d" in error and "512-d" in error and "S3D" in error
    assert not (files["base"] / "y").exists()


def test_import_says_when_the_text_encoder_is_not_here(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-home" / "hub"))
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-home" / "hub"))
    assert run_import(files, files["tar"], files["base"] / "z", text="roberta-base") == 2
    error = one_line_error(capsys)
    assert "roberta-base" in error and "HF_HUB_OFFLINE" in error and "hf download roberta-base" in error
    assert not (files["base"] / "z").exists()


def test_import_refuses_a_mapping_with_another_class_count(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    mapping = files["base"] / "short_mapping.txt"
    mapping.write_text("a000 only one\n")
    argv = [str(files["tar"]), "--out", str(files["base"] / "w"), "--frame-encoder", ENCODER]
    argv += ["--events", str(mapping), "--text-encoder", str(files["text"]), "--num-heads", str(files["heads"])]
    assert import_main(argv) == 2
    assert "1 event class names" in one_line_error(capsys)


def test_import_with_the_s3d_encoder(files: dict[str, Path]) -> None:
    """A 1024-d reference model imports with S3D weights; the checkpoint pins them by fingerprint."""
    out = files["base"] / "s3d"
    argv = [str(files["wide"]), "--out", str(out), "--frame-encoder", "S3D:random-seed0"]
    argv += ["--events", str(files["events"]), "--text-encoder", str(files["text"]), "--num-heads", str(files["heads"])]
    assert import_main(argv) == 0
    info = read_checkpoint_info(out)
    assert info.frame_encoder == "S3D:random-seed0" and info.model.feature_dim == 1024
    assert info.frame_encoder_fingerprint
    assert "16 fps" in (out / "MODEL_CARD.md").read_text()


def test_evaluate_pads_a_batch_together_and_batch_size_one_gives_the_apps_answers(
    files: dict[str, Path], imported: Path, tmp_path: Path
) -> None:
    """What the model card says: train/evaluate.py pads each --batch-size batch of questions together (as
    the reference's evaluation loop), and --batch-size 1 answers as the app (one question per batch)."""
    meta = json.loads((FIXTURE_DIR / "reference_text.json").read_text())
    questions, options = meta["questions"], meta["options"]
    (tmp_path / "txt_db").mkdir()
    records = [
        {"question_id": f"Interaction_T1_{n}", "video_id": f"v{n}", "question": q, "options": o, "answer": 0}
        for n, (q, o) in enumerate(zip(questions, options, strict=True))
    ]
    (tmp_path / "txt_db" / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    generator = torch.Generator().manual_seed(3)
    frames = {f"v{n}": torch.randn(REFERENCE_ROWS, ENCODER_WIDTH, generator=generator) for n in range(len(records))}
    save_file(frames, str(tmp_path / "features.safetensors"))

    def evaluate(batch_size: int) -> list[list[float]]:
        out = tmp_path / f"predictions-{batch_size}.jsonl"
        argv = ["--checkpoint", str(imported), "--data", str(tmp_path), "--split", "val", "--device", "cpu"]
        argv += ["--features", str(tmp_path / "features.safetensors"), "--batch-size", str(batch_size)]
        assert evaluate_main([*argv, "--predictions", str(out)]) == 0
        return [json.loads(line)["probabilities"] for line in out.read_text().splitlines()]

    predictor = Predictor(imported, device="cpu")
    app = [
        predictor.predict_features(frames[r["video_id"]], r["question"], r["options"], duration_s=80.0).probabilities
        for r in records
    ]
    for ours, theirs in zip(evaluate(1), app, strict=True):
        assert ours == pytest.approx(theirs, abs=1e-5)

    hidden, padding = predictor.text.encode([[f"{r['question']} {o}" for o in r["options"]] for r in records])
    with torch.no_grad():
        batched = predictor.model(torch.stack(list(frames.values())), None, hidden, padding)
    together = batched.focus.answer_logits.softmax(-1).tolist()
    for ours, theirs in zip(evaluate(len(records)), together, strict=True):
        assert ours == pytest.approx(theirs, abs=1e-5)
