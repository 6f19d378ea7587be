"""What the converters from official releases share: errors that name the official file, reading
its JSON / CSV / text, and writing our layout's files atomically and reproducibly.

Every converter reads only from the release folder and writes only under the output folder;
each output file is written to a temporary file and renamed over the old one, so an interrupted
run leaves either the previous file or the new one, and a second run writes the same bytes.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..types import DataLayoutError, MissingFileError, atomic_path


class OfficialFileError(DataLayoutError):
    """An official release file is malformed: the one-line message names it (and the line or entry)."""


class MissingOfficialFileError(MissingFileError, OfficialFileError):
    """An official release file is not in the release folder: the one-line message names it and where
    it comes from."""


def official_file(raw: Path, name: str, source: str) -> Path:
    """``raw / name`` if it is a file, else :class:`MissingOfficialFileError` naming ``source``."""
    path = Path(raw) / name
    if not path.is_file():
        raise MissingOfficialFileError(f"missing official file {path} ({source})")
    return path


def read_official_json(path: Path) -> Any:
    """Parse a JSON file; a malformed one raises :class:`OfficialFileError` with file and line."""
    try:
        with path.open("rb") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise OfficialFileError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from e
    except UnicodeDecodeError as e:
        raise OfficialFileError(f"{path}: not UTF-8 text ({e.reason})") from e


def read_official_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of each non-blank line, stripped; the last line counts without a newline."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise OfficialFileError(f"{path}: not UTF-8 text ({e.reason})") from e
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def read_official_csv(path: Path, required: Iterable[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV file with a header; quoted fields (commas, newlines) are kept whole.

    Raises :class:`OfficialFileError` for a missing column, a row longer than the header, or text that
    is not UTF-8.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = sorted(set(required) - set(reader.fieldnames or ()))
            if missing:
                raise OfficialFileError(f"{path}:1: missing columns {missing}")
            for row in reader:
                if None in row:
                    raise OfficialFileError(f"{path}:{reader.line_num}: more fields than the header has columns")
                yield reader.line_num, {k: v or "" for k, v in row.items()}
    except UnicodeDecodeError as e:
        raise OfficialFileError(f"{path}: not UTF-8 text ({e.reason})") from e
    except csv.Error as e:
        raise OfficialFileError(f"{path}: not a readable CSV file ({e})") from e


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON (keys in insertion order, non-ASCII kept) atomically."""
    write_text(path, json.dumps(data, ensure_ascii=False) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write one JSON object per line, every line newline-terminated, atomically."""
    write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def copy_file(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` atomically (contents only)."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
