"""Dataset readers, feature files and feature sampling (glance_focus.data).

The fixtures under ``tests/fixtures/data/`` are hand-written miniatures of each benchmark's
published layout. Their feature files hold, for a video with T frames and offset ``o``,
``arange(T * 8).reshape(T, 8) + o`` (see ``FIXTURE_FEATURES``).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from glance_focus.data import (
    DATASETS,
    DataLayoutError,
    DatasetSplit,
    Event,
    FeatureStore,
    MissingFileError,
    QAExample,
    VideoEvents,
    available_splits,
    load_split,
    sample_features,
    write_features,
    write_star_submission,
)

FIXTURES = Path(__file__).parent / "fixtures" / "data"

# video id -> (T, offset) of the fixture feature tensors (F = 8)
FIXTURE_FEATURES = {
    "6H78U": (6, 100),
    "4OKDR": (5, 200),
    "YSKX3": (4, 300),
    "ZZXQF": (3, 400),
    "4010069381": (7, 500),
    "2440175990": (9, 600),
    "0": (4, 700),
    "1": (4, 800),
    "2": (3, 900),
}


def fixture_features(video_id: str) -> torch.Tensor:
    num_frames, offset = FIXTURE_FEATURES[video_id]
    return torch.arange(num_frames * 8, dtype=torch.float32).reshape(num_frames, 8) + offset


def copy_fixture(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


def spans(events: VideoEvents) -> list[tuple[float, float]]:
    return [(round(s, 6), round(e, 6)) for s, e in events.spans_normalized()]


# ----- STAR ---------------------------------------------------------------------------------


def test_star_train_split():
    split = load_split("star", FIXTURES / "star", "train")
    assert isinstance(split, DatasetSplit)
    assert (split.name, split.split, split.task) == ("star", "train", "multiple_choice")
    assert split.has_answers and split.answer_vocab is None
    assert [ex.question_id for ex in split.examples] == [
        "Interaction_T1_13",
        "Sequence_T1_31",
        "Prediction_T1_100",
        "Feasibility_T1_200",
    ]
    assert [ex.answer for ex in split.examples] == [2, 0, 3, 1]
    first = split.examples[0]
    assert first.video_id == "6H78U"
    assert first.options == ("The closet/cabinet.", "The blanket.", "The clothes.", "The table.")
    assert first.question_type == "Interaction" and first.interval is None
    assert split.question_types() == ["Feasibility", "Interaction", "Prediction", "Sequence"]
    assert split.event_classes == [
        "Holding some clothes",
        "Putting clothes somewhere",
        "Taking some clothes from somewhere",
        "Tidying some clothes",
    ]
    # only this split's videos; events sorted by start; "a001" codes and extra fields handled
    assert set(split.events) == {"6H78U", "4OKDR"}
    video = split.events["6H78U"]
    assert video.duration_s == 20.0
    assert [e.label for e in video.events] == [0, 1, 3]
    assert spans(video) == [(0.0, 0.175), (0.1, 0.3), (0.4, 0.7)]
    assert split.events["4OKDR"].events == (Event(2, 4.0, 12.5),)
    assert spans(split.events["4OKDR"]) == [(0.4, 1.0)]  # end past the duration is clipped
    assert split.features_path == FIXTURES / "star" / "features" / "train.safetensors"
    assert split.videos_dir is None


def test_star_val_reads_question_type_key_and_reference_features():
    split = load_split("star", FIXTURES / "star", "val")
    assert [ex.question_type for ex in split.examples] == ["Interaction", "Sequence"]
    assert split.features_path == FIXTURES / "star" / "vis_db" / "s3d.pth"
    assert spans(split.events["YSKX3"]) == [(0.25, 0.5), (0.75, 0.9)]


def test_star_test_split_hides_answers():
    split = load_split("star", FIXTURES / "star", "test")
    assert not split.has_answers
    assert [ex.answer for ex in split.examples] == [None, None]
    assert split.question_types() == ["Interaction", "Prediction"]
    assert split.events == {}  # the test video has no labels in events.json


def test_synthetic_uses_the_star_layout():
    split = load_split("synthetic", FIXTURES / "star", "train")
    assert split.name == "synthetic" and len(split.examples) == 4


def test_star_submission_shape(tmp_path):
    path = tmp_path / "out" / "submission.json"
    path.parent.mkdir()
    path.write_text("old")
    predictions = {"Interaction_T1_5001": 2, "Prediction_T4_5002": np.int64(0), "Interaction_T1_7": 3}
    write_star_submission(predictions, path)
    assert json.loads(path.read_text()) == {
        "Interaction": [
            {"question_id": "Interaction_T1_5001", "answer": 2},
            {"question_id": "Interaction_T1_7", "answer": 3},
        ],
        "Sequence": [],
        "Prediction": [{"question_id": "Prediction_T4_5002", "answer": 0}],
        "Feasibility": [],
    }
    assert os.listdir(path.parent) == ["submission.json"]  # no temporary file left behind


def test_star_submission_rejects_unknown_question_types(tmp_path):
    with pytest.raises(ValueError, match="Counting_1"):
        write_star_submission({"Counting_1": 0}, tmp_path / "s.json")
    with pytest.raises(TypeError):
        write_star_submission({"Interaction_1": "B"}, tmp_path / "s.json")
    assert not (tmp_path / "s.json").exists()


# ----- AGQA ---------------------------------------------------------------------------------


def test_agqa_train_split():
    split = load_split("agqa", FIXTURES / "agqa", "train")
    assert (split.task, split.has_answers) == ("open_ended", True)
    assert split.answer_vocab == ["yes", "no", "book", "opening a door", "closing a door"]
    assert [ex.question_id for ex in split.examples] == ["o1", "o2", "o3"]
    assert [ex.answer for ex in split.examples] == [0, 2, 3]
    assert all(ex.options == () for ex in split.examples)
    assert split.question_types() == ["actFirst", "objWhat", "relationExists"]
    assert split.event_classes[4] == "Opening a door"
    assert set(split.events) == {"YSKX3", "4OKDR"}
    assert [e.label for e in split.events["YSKX3"].events] == [3, 2]
    assert spans(split.events["4OKDR"]) == [(0.0, round(4 / 12, 6))]
    assert split.features_path == FIXTURES / "agqa" / "features.safetensors"


def test_agqa_test_split_type_falls_back_to_semantic():
    split = load_split("agqa", FIXTURES / "agqa", "test")
    assert [ex.question_type for ex in split.examples] == ["relation", "objWhat"]
    assert [ex.answer for ex in split.examples] == [1, 2]
    assert [e.label for e in split.events["ZZXQF"].events] == [3, 2]  # "c003" resolved, sorted


def test_agqa_answer_outside_vocabulary_is_reported(tmp_path):
    root = copy_fixture("agqa", tmp_path)
    path = root / "txt_db" / "train_balanced.txt"
    data = json.loads(path.read_text())
    data["o2"]["answer"] = "sofa"
    path.write_text(json.dumps(data))
    with pytest.raises(DataLayoutError, match=r"train_balanced\.txt: question 'o2': answer 'sofa'"):
        load_split("agqa", root, "train")


# ----- NExT-QA ------------------------------------------------------------------------------


def test_nextqa_train_split():
    split = load_split("nextqa", FIXTURES / "nextqa", "train")
    assert (split.task, split.has_answers) == ("multiple_choice", True)
    assert [ex.question_id for ex in split.examples] == ["4010069381_6", "4010069381_4", "2440175990_0"]
    assert [ex.answer for ex in split.examples] == [0, 3, 4]
    assert split.examples[1].options == (
        "share with the girl, then sit",
        "approach lady sitting there",
        "unwrap it",
        "to open it, and read",
        "play with the toy",
    )
    assert split.question_types() == ["CH", "CW", "TN"]
    assert split.events == {} and split.event_classes == []
    assert split.features_path == FIXTURES / "nextqa" / "features" / "train.safetensors"


def test_nextqa_official_header_and_video_map(tmp_path):
    root = copy_fixture("nextqa", tmp_path)
    split = load_split("nextqa", root, "val")  # header says "video", not "video_id"
    assert [ex.question_id for ex in split.examples] == ["5333075105_1", "5333075105_7"]
    assert split.question_types() == ["DC", "DL"]
    assert split.features_path is None
    (root / "videos" / "1025").mkdir(parents=True)
    (root / "videos" / "1025" / "2440175990.mp4").write_bytes(b"")
    split = load_split("nextqa", root, "train")
    assert split.video_path("2440175990") == (root / "videos" / "1025" / "2440175990.mp4").resolve()
    assert split.video_path("4010069381") is None


def test_nextqa_official_layout_without_answers(tmp_path):
    text = (FIXTURES / "nextqa" / "txt_db" / "val_mc.csv").read_text().splitlines()
    rows = [line.split(",") for line in text]
    for row in rows[1:]:
        row[5] = ""
    (tmp_path / "test.csv").write_text("\n".join(",".join(row) for row in rows) + "\n")
    split = load_split("nextqa", tmp_path, "test")
    assert not split.has_answers and all(ex.answer is None for ex in split.examples)
    assert available_splits("nextqa", tmp_path) == ["test"]


def test_nextqa_bad_answer_names_the_line(tmp_path):
    root = copy_fixture("nextqa", tmp_path)
    path = root / "txt_db" / "train_mc.csv"
    path.write_text(path.read_text().replace(",4,0,TN,", ",7,0,TN,"))
    with pytest.raises(DataLayoutError, match=r"train_mc\.csv:4: answer '7'"):
        load_split("nextqa", root, "train")


# ----- EgoTaskQA ----------------------------------------------------------------------------


def test_egotaskqa_train_split():
    split = load_split("egotaskqa", FIXTURES / "egotaskqa", "train")
    assert (split.task, split.has_answers) == ("open_ended", True)
    assert split.answer_vocab == ["yes", "no", "fridge", "cup", "<UNK1>"]
    assert [ex.question_id for ex in split.examples] == ["10", "11", "12"]
    assert [ex.answer for ex in split.examples] == [2, 0, 3]
    assert [ex.video_id for ex in split.examples] == ["0", "0", "1"]
    assert [ex.question_type for ex in split.examples] == ["world", "multi-agent", "intent$world"]
    assert split.examples[0].interval == (0.0, 30.0)  # frames 0..720 at 24 fps
    assert split.examples[2].interval == (20.0, 50.0)
    assert split.event_classes == ["take cup", "open fridge", "close fridge", "put cup"]
    assert set(split.events) == {"0", "1"}
    clip = split.events["0"]
    assert clip.duration_s == 30.0
    assert [e.label for e in clip.events] == [0, 1]
    assert spans(clip) == [(0.0, round(300 / 720, 6)), (0.5, 1.0)]
    # as in the reference loader, spans are normalised by the interval's end frame
    assert spans(split.events["1"]) == [(0.4, 0.75)]
    assert split.features_path == FIXTURES / "egotaskqa" / "features.safetensors"


def test_egotaskqa_test_split():
    split = load_split("egotaskqa", FIXTURES / "egotaskqa", "test")
    assert [(ex.question_id, ex.answer, ex.question_type) for ex in split.examples] == [("20", 1, "world")]
    assert [e.label for e in split.events["2"].events] == [1, 2]


def test_egotaskqa_bad_interval_is_reported(tmp_path):
    root = copy_fixture("egotaskqa", tmp_path)
    path = root / "txt_db" / "formatted_test_qas_encode.json"
    data = json.loads(path.read_text())
    data[0]["interval"] = "3-2-1|P1"
    path.write_text(json.dumps(data))
    with pytest.raises(DataLayoutError, match=r"formatted_test_qas_encode\.json: question 0: interval"):
        load_split("egotaskqa", root, "test")


# ----- registry and errors ------------------------------------------------------------------


def test_registry_lists_datasets_and_splits():
    assert set(DATASETS) == {"star", "synthetic", "agqa", "nextqa", "egotaskqa"}
    assert available_splits("star", FIXTURES / "star") == ["train", "val", "test"]
    assert available_splits("agqa", FIXTURES / "agqa") == ["train", "test"]
    assert available_splits("nextqa", FIXTURES / "nextqa") == ["train", "val"]
    assert available_splits("egotaskqa", FIXTURES / "egotaskqa") == ["train", "test"]
    with pytest.raises(ValueError, match="unknown dataset 'clevrer'"):
        load_split("clevrer", FIXTURES / "star", "train")
    with pytest.raises(ValueError, match="invalid split name"):
        load_split("star", FIXTURES / "star", "../star/txt_db/train")


@pytest.mark.parametrize(
    ("dataset", "split", "missing"),
    [
        ("star", "dev", "txt_db/dev.jsonl"),
        ("agqa", "val", "txt_db/val_balanced.txt"),
        ("nextqa", "test", "txt_db/test_mc.csv"),
        ("egotaskqa", "val", "txt_db/formatted_val_qas_encode.json"),
    ],
)
def test_missing_file_names_file_and_layout(dataset, split, missing):
    with pytest.raises(MissingFileError) as info:
        load_split(dataset, FIXTURES / dataset, split)
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    assert str(FIXTURES / dataset / missing) in message
    assert "expected layout" in message and "ROOT/" in message


def test_missing_action_mapping_is_reported(tmp_path):
    root = copy_fixture("star", tmp_path)
    (root / "txt_db" / "action_mapping.txt").unlink()
    with pytest.raises(MissingFileError, match=r"action_mapping\.txt"):
        load_split("star", root, "train")


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    root = copy_fixture("star", tmp_path)
    path = root / "txt_db" / "train.jsonl"
    lines = path.read_text().splitlines()
    lines[3] = lines[3][:-1]  # line 4 loses its closing brace
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataLayoutError, match=r"train\.jsonl:4: not valid JSON"):
        load_split("star", root, "train")
    no_question = {"question_id": "Sequence_T1_2", "video_id": "x", "options": ["a", "b"], "answer": 0}
    lines[3] = json.dumps(no_question)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataLayoutError, match=r"train\.jsonl:4: missing key 'question'"):
        load_split("star", root, "train")
    lines[3] = json.dumps(
        {"question_id": "Sequence_T1_2", "video_id": "x", "question": "q", "options": ["a", "b"], "answer": 5}
    )
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataLayoutError, match=r"train\.jsonl:4: answer 5 is not an index"):
        load_split("star", root, "train")


def test_unknown_event_class_is_reported(tmp_path):
    root = copy_fixture("star", tmp_path)
    path = root / "txt_db" / "events.json"
    path.write_text(path.read_text().replace('"a002"', '"a099"'))
    with pytest.raises(DataLayoutError, match=r"events\.json: entry '4OKDR': action 0: class 'a099'"):
        load_split("star", root, "train")


# ----- common types -------------------------------------------------------------------------


def test_video_events_are_sorted_and_need_a_duration():
    events = VideoEvents(4.0, (Event(1, 3.0, 4.0), Event(0, -1.0, 2.0)))
    assert [e.label for e in events.events] == [0, 1]
    assert events.spans_normalized() == [(0.0, 0.5), (0.75, 1.0)]
    with pytest.raises(ValueError):
        VideoEvents(0.0, ())


def test_qa_example_checks_its_answer():
    with pytest.raises(ValueError, match="not one of the 2 options"):
        QAExample("q", "v", "?", ("a", "b"), 2, "t")
    assert QAExample("q", "v", "?", (), 17, "t").answer == 17  # open-ended: vocabulary index


def test_video_path_finds_any_extension_and_stays_inside(tmp_path):
    root = copy_fixture("star", tmp_path)
    (root / "videos").mkdir()
    (root / "videos" / "6H78U.webm").write_bytes(b"")
    (tmp_path / "secret.mp4").write_bytes(b"")
    split = load_split("star", root, "train")
    assert split.videos_dir == root / "videos"
    assert split.video_path("6H78U") == (root / "videos" / "6H78U.webm").resolve()
    assert split.video_path("4OKDR") is None
    assert split.video_path("../../secret") is None


# ----- feature files ------------------------------------------------------------------------


def test_feature_store_safetensors():
    store = FeatureStore(FIXTURES / "agqa" / "features.safetensors")  # stored as float16
    assert store.keys() == ["4OKDR", "YSKX3", "ZZXQF"]
    assert len(store) == 3 and "YSKX3" in store and "6H78U" not in store
    assert store.feature_dim == 8
    assert store.metadata == {"encoder": "fixture", "frames_per_second": "1"}
    feats = store["ZZXQF"]
    assert feats.dtype == torch.float32
    assert torch.equal(feats, fixture_features("ZZXQF"))
    with pytest.raises(KeyError, match="6H78U"):
        store["6H78U"]
    copy = pickle.loads(pickle.dumps(store))  # e.g. into DataLoader workers
    assert torch.equal(copy["4OKDR"], fixture_features("4OKDR"))


def test_feature_store_reference_pth():
    store = FeatureStore(FIXTURES / "star" / "vis_db" / "s3d.pth")
    assert store.keys() == ["4OKDR", "6H78U", "YSKX3", "ZZXQF"]
    assert store.feature_dim == 8 and store.metadata == {}
    for video_id in store:
        assert torch.equal(store[video_id], fixture_features(video_id))


def test_feature_store_pth_int_keys_and_clip_tensors(tmp_path):
    path = tmp_path / "feats.pth"
    torch.save({7: torch.ones(2, 3, 4)}, path)  # [clips, frames, F], integer video id
    store = FeatureStore(path)
    assert store.keys() == ["7"]
    assert store["7"].shape == (6, 4)


class _Payload:
    """Unpickling this object creates ``marker``: a stand-in for a malicious file's code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("container", ["plain_pickle", "torch_save"])
def test_pickle_payload_is_refused_and_never_runs(tmp_path, container):
    live = tmp_path / "live_marker"
    pickle.loads(pickle.dumps(_Payload(live)))
    assert live.exists()  # the payload is real: plain unpickling runs it

    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    if container == "plain_pickle":
        path.write_bytes(pickle.dumps({"6H78U": _Payload(marker)}, protocol=2))
    else:
        torch.save({"6H78U": _Payload(marker)}, path)
    store = FeatureStore(path)  # lazy: nothing read yet
    with pytest.raises(DataLayoutError, match="refused"):
        store.keys()
    assert not marker.exists()


def test_write_features_round_trip_and_atomic_replace(tmp_path):
    path = tmp_path / "features" / "train.safetensors"
    first = {"a/b c": torch.randn(5, 4), "Interaction_T1_13": torch.randn(2, 4).half()}
    write_features(path, first, {"encoder": "ViT-B-32:random-seed0"})
    store = FeatureStore(path)
    assert store.keys() == ["Interaction_T1_13", "a/b c"]  # arbitrary id strings survive, sorted
    assert store.metadata == {"encoder": "ViT-B-32:random-seed0"}
    assert torch.equal(store["a/b c"], first["a/b c"])
    assert torch.equal(store["Interaction_T1_13"], first["Interaction_T1_13"].float())

    write_features(path, {"x": torch.zeros(1, 4)})
    assert FeatureStore(path).keys() == ["x"]
    assert os.listdir(path.parent) == ["train.safetensors"]

    with pytest.raises(ValueError, match="same feature size"):
        write_features(path, {"x": torch.zeros(1, 4), "y": torch.zeros(1, 5)})
    with pytest.raises(ValueError, match=r"\[T, F\]"):
        write_features(path, {"x": torch.zeros(4)})
    with pytest.raises(TypeError, match="metadata"):
        write_features(path, {"x": torch.zeros(1, 4)}, {"fps": 2})  # type: ignore[dict-item]
    assert FeatureStore(path).keys() == ["x"]  # failed writes leave the file as it was
    assert os.listdir(path.parent) == ["train.safetensors"]


def test_truncated_safetensors_is_reported(tmp_path):
    path = tmp_path / "broken.safetensors"
    save_file({"v": torch.zeros(3, 4)}, str(path))
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DataLayoutError, match=r"broken\.safetensors"):
        FeatureStore(path).keys()


def test_missing_features_file():
    with pytest.raises(MissingFileError, match=r"nowhere\.safetensors"):
        FeatureStore(FIXTURES / "nowhere.safetensors")


# ----- feature sampling ---------------------------------------------------------------------


def test_sample_features_subsamples_like_the_reference():
    feats = torch.arange(10, dtype=torch.float32).unsqueeze(1).repeat(1, 3)  # row i holds i
    out = sample_features(feats, 4)
    expected = [(j * 10) // 4 for j in range(4)]  # the reference's index
    assert expected == [0, 2, 5, 7]
    assert out.positions.tolist() == expected
    assert torch.equal(out.features, feats[expected])
    assert not out.padding.any()
    times = sample_features(feats, 4, normalized=True).positions
    assert torch.allclose(times, torch.tensor([0.05, 0.25, 0.55, 0.75]))


def test_sample_features_same_length_is_identity():
    feats = torch.randn(6, 2)
    out = sample_features(feats, 6)
    assert torch.equal(out.features, feats)
    assert out.positions.tolist() == list(range(6))


def test_sample_features_pads_shorter_inputs_at_the_end():
    feats = torch.randn(3, 2) + 5
    features, padding, positions = sample_features(feats, 5)
    assert torch.equal(features[:3], feats)
    assert torch.equal(features[3:], torch.zeros(2, 2))
    assert padding.tolist() == [False, False, False, True, True]
    assert positions.tolist() == [0, 1, 2, -1, -1]
    times = sample_features(feats, 5, normalized=True).positions
    assert times.dtype == torch.float32
    assert torch.allclose(times, torch.tensor([1 / 6, 0.5, 5 / 6, 0.0, 0.0]))


def test_sample_features_rejects_bad_input():
    with pytest.raises(ValueError, match="zero frames"):
        sample_features(torch.zeros(0, 4), 4)
    with pytest.raises(ValueError, match=r"\[T, F\]"):
        sample_features(torch.zeros(4), 4)
    with pytest.raises(ValueError, match="num_frames"):
        sample_features(torch.zeros(4, 4), 0)


def test_fixture_features_match_the_splits():
    """Every fixture split's videos have features in its features file, as training needs."""
    for dataset in ("star", "agqa", "nextqa", "egotaskqa"):
        split = load_split(dataset, FIXTURES / dataset, "train")
        store = FeatureStore(split.features_path)
        for example in split.examples:
            assert torch.equal(store[example.video_id], fixture_features(example.video_id))
