"""Parity of the reference text path, from question and option strings to answer logits.

The fixture (../shared/fixtures/reference_text/, or the directory in the environment variable
GLANCE_FOCUS_REFERENCE_TEXT_FIXTURE) holds the reference code's weights (tiny RoBERTa included),
its tokenizer, the strings, the tokens and text states at every position, the glance outputs and
the answer logits, both with all questions in one padded batch and with one question per batch.
Everything, sizes and strings included, is read from the fixture; the checkpoint is made by the
library's importer and loaded like any other.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from glance_focus.checkpoint import LoadedCheckpoint, load_checkpoint
from glance_focus.evaluation import checkpoint_text_features
from glance_focus.reference import convert_reference_to_checkpoint
from glance_focus.text_features import TextFeatureCache, TextTooLongError, question_sequences

TOLERANCE = 1e-5
_DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "reference_text"
FIXTURE_DIR = Path(os.environ.get("GLANCE_FOCUS_REFERENCE_TEXT_FIXTURE", str(_DEFAULT)))


def write_text_encoder_dir(fixture: Path, out: Path) -> Path:
    """A local text-encoder directory: the fixture's tokenizer and its RoBERTa config (no weights:
    the fine-tuned ones come from the reference checkpoint)."""
    meta = json.loads((fixture / "reference_text.json").read_text())
    shutil.copytree(fixture / "tokenizer", out)
    (out / "config.json").write_text(json.dumps(meta["text_encoder"]["roberta_config"]))
    return out


class TextFixture:
    def __init__(self, directory: Path, work: Path) -> None:
        if not (directory / "reference_text.json").is_file():
            pytest.skip(f"reference text fixture not found at {directory}")
        self.meta = json.loads((directory / "reference_text.json").read_text())
        self.tensors = load_file(str(directory / "reference_text.safetensors"))
        weights = {k.removeprefix("weights."): v for k, v in self.tensors.items() if k.startswith("weights.")}
        cfg = self.meta["config"]
        self.batch, self.options = cfg["batch"], cfg["num_options"]
        self.questions: list[str] = self.meta["questions"]
        self.option_lists: list[list[str]] = self.meta["options"]
        encoder_dir = write_text_encoder_dir(directory, work / "text-encoder")
        classes = [f"event {k}" for k in range(cfg["event_pred_dim"] - 1)]
        path = convert_reference_to_checkpoint(
            weights, work / "imported", classes, text_encoder=str(encoder_dir), num_heads=cfg["nhead"]
        )
        self.loaded: LoadedCheckpoint = load_checkpoint(path)
        self.model = self.loaded.model
        self.text: TextFeatureCache = checkpoint_text_features(self.loaded)
        self.frames = self.tensors["inputs.frames"]

    def sequences(self) -> list[list[str]]:
        return [question_sequences(q, o) for q, o in zip(self.questions, self.option_lists, strict=True)]

    @torch.no_grad()
    def run(self, rows: list[int]):
        """Our model on the videos ``rows``, their questions encoded as one padded batch."""
        sequences = self.sequences()
        hidden, padding = self.text.encode([sequences[r] for r in rows])
        return self.model(self.frames[rows], None, hidden, padding), hidden, padding


@pytest.fixture(scope="module")
def fixture(tmp_path_factory: pytest.TempPathFactory) -> TextFixture:
    return TextFixture(FIXTURE_DIR, tmp_path_factory.mktemp("reference_text"))


def assert_close(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    assert ours.shape == theirs.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(theirs.shape)}"
    err = (ours.float() - theirs.float()).abs().max().item()
    assert err <= TOLERANCE, f"{what}: max abs error {err:.2e}"


def test_reference_text_strings_are_question_space_option(fixture: TextFixture) -> None:
    flat = [text for seqs in fixture.sequences() for text in seqs]
    assert flat == fixture.meta["texts"]


def test_reference_text_tokens_and_states_at_every_position(fixture: TextFixture) -> None:
    _, hidden, padding = fixture.run(list(range(fixture.batch)))
    ids = fixture.tensors["tokens.input_ids"]
    mask = fixture.tensors["tokens.attention_mask"]
    assert hidden.dtype == torch.float32
    assert torch.equal(padding.flatten(0, 1), mask == 0), "padded to the batch's longest, nothing truncated"
    assert hidden.shape[2] == ids.shape[1]
    assert_close(hidden.flatten(0, 1), fixture.tensors["outputs.text_last_hidden_state"], "text states (pads too)")
    resized = fixture.model.text_proj(hidden.flatten(0, 1))
    assert_close(resized, fixture.tensors["outputs.focus.text_memory_resized"], "resized text states")


def test_reference_text_glance_outputs(fixture: TextFixture) -> None:
    out, _, _ = fixture.run(list(range(fixture.batch)))
    per_option = fixture.options

    def repeat(x: torch.Tensor) -> torch.Tensor:  # the reference repeats each video once per option
        return x.repeat_interleave(per_option, 0)

    assert_close(repeat(out.glance.event_logits), fixture.tensors["outputs.glance.pred_logits"], "glance logits")
    assert_close(repeat(out.glance.spans), fixture.tensors["outputs.glance.pred_spans"], "glance spans")
    assert_close(
        repeat(out.sorted_memory_prompts), fixture.tensors["outputs.glance.sorted_memory_prompt"], "sorted prompts"
    )


def test_reference_text_answer_logits_from_strings(fixture: TextFixture) -> None:
    out, _, _ = fixture.run(list(range(fixture.batch)))
    assert_close(out.focus.answer_logits, fixture.tensors["outputs.focus.pred_answer"], "answer logits (one batch)")


def test_reference_text_one_question_per_padded_batch(fixture: TextFixture) -> None:
    """The app's policy: each question's options padded together; equals the reference run per video."""
    logits = []
    for video in range(fixture.batch):
        out, _, padding = fixture.run([video])
        expected_mask = fixture.tensors[f"tokens.per_question.{video}.attention_mask"]
        assert torch.equal(padding[0], expected_mask == 0)
        logits.append(out.focus.answer_logits)
    theirs = fixture.tensors["outputs.focus.pred_answer_per_question_padding"]
    assert_close(torch.cat(logits), theirs, "answer logits (one question per batch)")


def test_reference_text_checkpoint_records_the_text_path(fixture: TextFixture) -> None:
    info, config = fixture.loaded.info, fixture.model.config
    roberta = fixture.meta["text_encoder"]["roberta_config"]
    assert config.compat_text_padding and fixture.text.keep_padding_states
    assert info.text_encoder_config is not None
    assert info.text_encoder_config["num_attention_heads"] == roberta["num_attention_heads"]
    assert info.text_max_length == roberta["max_position_embeddings"] - roberta["pad_token_id"] - 1
    assert fixture.loaded.text_encoder_state is not None


def test_reference_text_too_long_is_refused_not_truncated(fixture: TextFixture) -> None:
    question = fixture.questions[0]
    limit = fixture.loaded.info.text_max_length
    long_option = " ".join([fixture.option_lists[0][0]] * limit)
    with pytest.raises(TextTooLongError, match=f"at most {limit} tokens"):
        fixture.text.encode([question_sequences(question, [long_option, fixture.option_lists[0][1]])])
