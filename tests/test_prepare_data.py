"""train/prepare_data.py: official release files -> the layouts our readers take.

The samples in tests/fixtures/official/ follow each release's published format (field names,
quoting, which split hides its answers) with the traps the real files have: Charades actions
crossing a question's window or touching it, Charades classes without a STAR class, a
zero-length action, quoted CSV fields with commas, quotes and a newline, non-ASCII text, STAR's
action_classes.txt without a final newline, choices listed out of choice_id order.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from glance_focus.data import DataLayoutError, load_split
from glance_focus.data.official import MissingOfficialFileError, OfficialFileError, prepare
from glance_focus.data.official.charades import read_charades_classes
from glance_focus.data.official.star import charades_to_star, read_star_classes
from glance_focus.data.star import HIDDEN_ANSWER

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = ROOT / "tests" / "fixtures" / "official"


def release(tmp_path: Path, *parts: str) -> Path:
    """A release folder holding the files of the named fixture folders side by side."""
    raw = tmp_path / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for part in parts:
        for path in (OFFICIAL / part).iterdir():
            shutil.copyfile(path, raw / path.name)
    return raw


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "train" / "prepare_data.py"), *args],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        check=False,
    )


# ----------------------------------------------------------------------------------------- STAR


def test_star_classes_correspond_by_label_one_to_one_in_order():
    charades = read_charades_classes(OFFICIAL / "charades")
    star = read_star_classes(OFFICIAL / "star")
    assert len(charades) == 157
    assert len(star) == 111 and star[-1] == "open a refrigerator"  # the file has no final newline
    mapping = charades_to_star(charades, star)
    assert sorted(mapping.values()) == list(range(111))  # every STAR class exactly once
    # STAR kept Charades' order: the correspondence is increasing
    assert list(mapping.values()) == sorted(mapping.values())
    spot = {"c000": 0, "c008": 7, "c083": 64, "c121": 94, "c129": 100, "c134": 103, "c143": 110}
    assert {code: mapping[code] for code in spot} == spot
    assert "c009" not in mapping and "c156" not in mapping  # no STAR class
    # both wordings of c002 in circulation map to a002
    variant = {**charades, "c002": "Taking clothes from somewhere"}
    assert charades_to_star(variant, star)["c002"] == 2


def test_star_class_without_a_charades_label_is_refused():
    charades = read_charades_classes(OFFICIAL / "charades")
    star = [*read_star_classes(OFFICIAL / "star"), "juggle some oranges"]
    with pytest.raises(OfficialFileError, match=r"STAR class a111 'juggle some oranges' matches no Charades class"):
        charades_to_star(charades, star)


def test_star_release_converts_to_question_keyed_layout(tmp_path):
    raw = release(tmp_path, "star", "charades")
    out = tmp_path / "star"
    report = prepare("star", raw, out)
    txt_db = out / "txt_db"

    train = jsonl(txt_db / "train.jsonl")
    assert train[0] == {
        "question_id": "Interaction_T1_13",
        "video_id": "6H78U",
        "question": "Which object was held by the person?",
        "options": ["The café table.", "The bed.", "The clothes.", "The door."],  # by choice_id
        "answer": 2,
        "start": 4.0,
        "end": 10.0,
    }
    assert [q["answer"] for q in jsonl(txt_db / "val.jsonl")] == [3]
    test = jsonl(txt_db / "test.jsonl")
    assert test[0]["answer"] == HIDDEN_ANSWER and test[0]["answer"] not in range(4)

    events = json.loads((txt_db / "events.json").read_text())
    assert set(events) == {"Interaction_T1_13", "Sequence_T1_31", "Prediction_T1_7", "Feasibility_T1_5001"}
    # window [4, 10]: c000 2-8 clipped to 0-4 (a000); c008 5-12 -> 1-6 (a007); c009 has no STAR class;
    # c134 20-29 outside; c012 9.5-9.5 has no length
    assert events["Interaction_T1_13"] == {"duration": 6.0, "actions": [[0, 0.0, 4.0], [7, 1.0, 6.0]]}
    # window [8, 12]: c000 ends at 8 (touches only): dropped
    assert events["Sequence_T1_31"] == {"duration": 4.0, "actions": [[7, 0.0, 4.0]]}
    # from the Charades test CSV; c134 runs past the video's end and is clipped to the window
    assert events["Prediction_T1_7"] == {"duration": 19.75, "actions": [[82, 0.0, 4.5], [103, 0.0, 19.75]]}
    assert events["Feasibility_T1_5001"]["actions"] == [[0, 2.0, 8.0], [7, 5.0, 12.0], [103, 20.0, 29.0]]
    assert all(isinstance(a[0], int) for e in events.values() for a in e["actions"])

    # what the reference loader reads of each line is there, and int(answer) works on every split
    for split in ("train", "val", "test"):
        for row in jsonl(txt_db / f"{split}.jsonl"):
            assert {"question", "video_id", "answer", "question_id", "options"} <= set(row)
            assert int(row["answer"]) == row["answer"] and len(row["options"]) == 4

    mapping = (txt_db / "action_mapping.txt").read_text()
    assert mapping.endswith("a110 open a refrigerator\n") and mapping.count("\n") == 111
    assert mapping.split("\n")[:-1][-1] == "a110 open a refrigerator"  # the reference's reading keeps a110
    assert report["questions"] == {"train": 2, "val": 1, "test": 1}
    assert report["events_kept"] == 8
    assert (report["dropped_no_star_class"], report["dropped_empty"], report["dropped_outside_window"]) == (2, 3, 4)
    assert report["classes_matched"] == 111


def test_prepared_star_reads_by_question_clip(tmp_path):
    raw = release(tmp_path, "star", "charades")
    out = tmp_path / "star"
    prepare("star", raw, out)
    train = load_split("star", out, "train")
    assert [ex.clip_id for ex in train.examples] == ["Interaction_T1_13", "Sequence_T1_31"]
    assert {ex.video_id for ex in train.examples} == {"6H78U"}
    assert train.examples[1].interval == (8.0, 12.0)
    assert train.event_classes[7] == "open a door" and len(train.event_classes) == 111
    # two questions on one video, each with its own clip's events
    first, second = (train.events[ex.clip_id] for ex in train.examples)
    assert first.duration_s == 6.0 and [e.label for e in first.events] == [0, 7]
    assert second.duration_s == 4.0 and second.spans_normalized() == [(0.0, 1.0)]
    assert train.clips() == {"Interaction_T1_13": ("6H78U", (4.0, 10.0)), "Sequence_T1_31": ("6H78U", (8.0, 12.0))}
    test = load_split("star", out, "test")
    assert not test.has_answers and test.examples[0].answer is None
    assert test.examples[0].clip_id == "Feasibility_T1_5001"


def test_star_conversion_is_idempotent_and_leaves_no_temporary_files(tmp_path):
    raw = release(tmp_path, "star", "charades")
    out = tmp_path / "star"
    prepare("star", raw, out)
    first = tree(out)
    prepare("star", raw, out)
    assert tree(out) == first
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]
    assert tree(raw) == tree(release(tmp_path / "again", "star", "charades"))  # the release is untouched


def test_star_test_split_is_optional(tmp_path):
    raw = release(tmp_path, "star", "charades")
    (raw / "STAR_test.json").unlink()
    report = prepare("star", raw, tmp_path / "out")
    assert report["questions"] == {"train": 2, "val": 1}
    assert not (tmp_path / "out" / "txt_db" / "test.jsonl").exists()


@pytest.mark.parametrize(
    "name,corrupt,message",
    [
        ("Charades_v1_test.csv", None, r"missing official file .*Charades_v1_test\.csv \(Charades v1"),
        ("action_classes.txt", None, r"missing official file .*action_classes\.txt \(STAR action classes"),
        ("STAR_val.json", None, r"missing official file .*STAR_val\.json \(STAR v1 questions"),
        ("STAR_val.json", lambda t: t[:-5], r"STAR_val\.json:1: not valid JSON"),
        (
            "STAR_train.json",
            lambda t: t.replace('"answer": "Opened the door."', '"answer": "Danced."'),
            r"STAR_train\.json: question Sequence_T1_31: answer 'Danced\.' is not exactly one of its choices",
        ),
        (
            "STAR_train.json",
            lambda t: t.replace('"start": 8.0', '"start": 13.0'),
            r"question Sequence_T1_31: window start 13\.0 / end 12\.0",
        ),
        (
            "STAR_train.json",
            lambda t: t.replace('"video_id": "6H78U"', '"video_id": "NOPE1"', 1),
            r"question Interaction_T1_13: video NOPE1 is in neither Charades CSV",
        ),
        (
            "STAR_test.json",
            lambda t: t.replace('"question_id"', '"qid"'),
            r"STAR_test\.json: question 0: missing key 'question_id'",
        ),
        (
            "Charades_v1_train.csv",
            lambda t: t.replace("c008 5.00 12.00", "c008 5.00"),
            r"Charades_v1_train\.csv:3: action 'c008 5\.00' is not 'cNNN start end'",
        ),
        (
            "Charades_v1_train.csv",
            lambda t: t.replace("c008", "c999"),
            r"Charades_v1_train\.csv:3: action class c999 is not in Charades_v1_classes\.txt",
        ),
        ("Charades_v1_test.csv", lambda t: t.replace(",40.00", ",forty"), r"Charades_v1_test\.csv:2: length: 'forty'"),
        (
            "Charades_v1_test.csv",
            lambda t: t.replace("id,", "vid,"),
            r"Charades_v1_test\.csv:1: missing columns \['id'\]",
        ),
        (
            "action_classes.txt",
            lambda t: t.replace("a005", "a050"),
            r"action_classes\.txt:6: expected 'a005 <class label>'",
        ),
    ],
)
def test_bad_star_release_is_named_and_nothing_is_written(tmp_path, name, corrupt, message):
    raw = release(tmp_path, "star", "charades")
    if corrupt is None:
        (raw / name).unlink()
    else:
        (raw / name).write_text(corrupt((raw / name).read_text(encoding="utf-8")), encoding="utf-8")
    out = tmp_path / "out"
    with pytest.raises(OfficialFileError, match=message) as info:
        prepare("star", raw, out)
    assert "\n" not in str(info.value)
    assert not out.exists()
    if corrupt is None:
        assert isinstance(info.value, MissingOfficialFileError)


def test_cli_writes_the_layout_and_reports(tmp_path):
    raw = release(tmp_path, "star", "charades")
    done = cli("--dataset", "star", "--raw", str(raw), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["dataset"] == "star" and report["questions"]["train"] == 2
    assert (tmp_path / "out" / "txt_db" / "events.json").is_file()


def test_cli_missing_file_is_one_line_and_exit_2(tmp_path):
    raw = release(tmp_path, "star", "charades")
    (raw / "Charades_v1_classes.txt").unlink()
    done = cli("--dataset", "star", "--raw", str(raw), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert done.stderr.startswith("error: missing official file ") and "Charades_v1_classes.txt" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    done = cli("--dataset", "star", "--raw", str(tmp_path / "absent"), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and done.stderr == f"error: release folder {tmp_path / 'absent'} does not exist\n"


# ----------------------------------------------------------------------- reading the reference's STAR


def test_action_mapping_without_final_newline_keeps_its_last_class(tmp_path):
    txt_db = tmp_path / "star" / "txt_db"
    txt_db.mkdir(parents=True)
    (txt_db / "action_mapping.txt").write_text("a000 hold some clothes\na001 put clothes somewhere")
    question = {"question_id": "Interaction_T1_1", "video_id": "V", "question": "q", "options": ["a", "b"], "answer": 0}
    (txt_db / "train.jsonl").write_text(json.dumps(question) + "\n")
    (txt_db / "events.json").write_text(json.dumps({"Interaction_T1_1": {"duration": 3.0, "actions": [[1, 0.5, 2.0]]}}))
    split = load_split("star", tmp_path / "star", "train")
    assert split.event_classes == ["hold some clothes", "put clothes somewhere"]
    assert split.events["Interaction_T1_1"].events[0].label == 1


def test_events_keyed_both_by_question_and_by_video_are_refused(tmp_path):
    root = tmp_path / "star"
    prepare("star", release(tmp_path, "star", "charades"), root)
    events_path = root / "txt_db" / "events.json"
    events = json.loads(events_path.read_text())
    events["6H78U"] = {"duration": 30.0, "actions": []}
    events_path.write_text(json.dumps(events))
    with pytest.raises(DataLayoutError, match=r"events\.json: keyed both by question id .* and by video id"):
        load_split("star", root, "train")


# ------------------------------------------------------------------------------------ AGQA 2.0


def test_agqa_release_converts_and_reads(tmp_path):
    raw = release(tmp_path, "agqa", "charades")
    out = tmp_path / "agqa"
    report = prepare("agqa", raw, out)
    assert report["questions"] == {"train": 3, "test": 2}
    vocab = json.loads((out / "txt_db" / "agqa_balanced_txt_vocab.json").read_text())["answer_token_to_idx"]
    # training answers by frequency (ties by text), then the test-only answers
    assert vocab == {"Yes": 0, "bed": 1, "No": 2, "cup": 3}
    assert report["test_only_answers"] == 2
    assert (out / "txt_db" / "train_balanced.txt").read_bytes() == (raw / "train_balanced.txt").read_bytes()
    train = load_split("agqa", out, "train")
    assert [train.answer_vocab[ex.answer] for ex in train.examples] == ["Yes", "bed", "Yes"]
    assert train.examples[2].question_type == "action"  # AGQA 2.0 has no 'type': its 'semantic' field
    video = train.events["6H78U"]
    assert video.duration_s == 30.0
    # whole-video Charades events, every class kept (c009 too), the zero-length c012 dropped
    assert [(e.label, e.start_s, e.end_s) for e in video.events] == [
        (0, 2.0, 8.0),
        (8, 5.0, 12.0),
        (9, 6.0, 7.0),
        (134, 20.0, 29.0),
    ]
    assert train.event_classes[9] == "Putting something on a table" and len(train.event_classes) == 157
    test = load_split("agqa", out, "test")
    assert [test.answer_vocab[ex.answer] for ex in test.examples] == ["No", "cup"]
    assert test.examples[0].question == "Was the person touching the café sofa?"
    assert report["dropped_empty"] == 1


def test_agqa_missing_answer_key_is_named(tmp_path):
    raw = release(tmp_path, "agqa", "charades")
    data = json.loads((raw / "test_balanced.txt").read_text())
    del data["t2"]["answer"]
    (raw / "test_balanced.txt").write_text(json.dumps(data))
    with pytest.raises(OfficialFileError, match=r"test_balanced\.txt: question 't2': missing key 'answer'"):
        prepare("agqa", raw, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------- NExT-QA


def test_nextqa_reader_takes_the_official_files_and_prepare_copies_them(tmp_path):
    raw = release(tmp_path, "nextqa")
    direct = load_split("nextqa", raw, "train")  # the release folder as it is
    assert direct.examples[1].question == "why did the man, after strumming, look at the girl"
    assert direct.examples[1].options[1] == 'to say "thanks"'
    assert direct.video_files["4010069381"] == "0020/4010069381"  # official map name map_vid_vidorID.json
    out = tmp_path / "nextqa"
    report = prepare("nextqa", raw, out)
    assert report == {"questions": {"train": 2, "val": 1, "test": 1}, "video_map": True}
    assert tree(out) == tree(raw)
    assert [ex.answer for ex in load_split("nextqa", out, "test").examples] == [1]


def test_nextqa_bad_answer_is_named(tmp_path):
    raw = release(tmp_path, "nextqa")
    (raw / "val.csv").write_text((raw / "val.csv").read_text().replace(",2,8,TN,", ",7,8,TN,"))
    with pytest.raises(DataLayoutError, match=r"val\.csv:2: answer '7' is not an option index"):
        prepare("nextqa", raw, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------- EgoTaskQA


def test_egotaskqa_release_is_checked_and_copied(tmp_path):
    raw = release(tmp_path, "egotaskqa")
    out = tmp_path / "ego"
    report = prepare("egotaskqa", raw, out)
    assert report == {"questions": {"train": 2, "val": 1, "test": 1}, "events": True}
    val = load_split("egotaskqa", out, "val")
    assert val.examples[0].interval == (10.0, 1010 / 24)
    assert val.events[val.examples[0].clip_id].events[0].label == 2
    test = load_split("egotaskqa", out, "test")
    assert test.examples[0].question_type == "multi-agent$world"
    # without the reference authors' event files the release still converts, without events
    for name in ("events.json", "hois_full_trans.json"):
        (raw / name).unlink()
    assert prepare("egotaskqa", raw, tmp_path / "bare")["events"] is False
    assert load_split("egotaskqa", tmp_path / "bare", "train").events == {}


def test_egotaskqa_events_without_class_names_are_refused(tmp_path):
    raw = release(tmp_path, "egotaskqa")
    (raw / "hois_full_trans.json").unlink()
    with pytest.raises(MissingOfficialFileError, match=r"hois_full_trans\.json: events\.json needs it"):
        prepare("egotaskqa", raw, tmp_path / "out")
