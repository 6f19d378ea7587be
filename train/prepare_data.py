"""Convert a benchmark's official release files into the layout the dataset readers take.

    python train/prepare_data.py --dataset star --raw DIR --out DIR
    python train/prepare_data.py --dataset agqa|nextqa|egotaskqa --raw DIR --out DIR

DIR given to ``--raw`` holds the official files side by side:

- star: STAR_train.json, STAR_val.json, STAR_test.json (optional) from STAR v1
  (https://bobbywu.com/STAR), action_classes.txt from STAR's classes.zip, and Charades v1's
  Charades_v1_train.csv, Charades_v1_test.csv, Charades_v1_classes.txt
  (https://prior.allenai.org/projects/charades). Writes txt_db/{train,val,test}.jsonl (with each
  question's window), events.json keyed by question id (times from the window's start) and
  action_mapping.txt.
- agqa: train_balanced.txt, test_balanced.txt from AGQA 2.0's AGQA_balanced.zip, plus the three
  Charades v1 files. Writes them with an answer vocabulary, charades.json and action_mapping.txt.
- nextqa: train.csv, val.csv, test.csv (optional), map_vid_vidorID.json (optional) from
  github.com/doc-doc/NExT-QA dataset/nextqa/. Checked and copied.
- egotaskqa: formatted_{train,val,test}_qas_encode.json and answer_set.txt from EgoTaskQA's
  data/qa/direct/ (https://sites.google.com/view/egotaskqa); events.json + hois_full_trans.json
  copied when present. Checked and copied.

Rerunning writes the same files; every file is replaced atomically. A missing or malformed
official file stops the run before anything is written, with a one-line error naming it (exit 2).
Prints a JSON report of what was written and dropped. See docs/reproduce.md for the whole path
from download to evaluation.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from glance_focus.data.official import PREPARERS, prepare
from glance_focus.data.types import DataLayoutError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=tuple(PREPARERS))
    parser.add_argument("--raw", required=True, type=Path, help="folder holding the official release files")
    parser.add_argument("--out", required=True, type=Path, help="dataset folder to write (the readers' root)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = prepare(args.dataset, args.raw, args.out)
    except DataLayoutError as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    except OSError as exc:  # unwritable output folder, full disk
        print(f"error: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(json.dumps({"dataset": args.dataset, "out": str(args.out), **report}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
