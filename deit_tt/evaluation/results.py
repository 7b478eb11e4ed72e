"""The results file: JSON lines, a header, then per batch one line per image and a commit line.

A batch counts only once its commit line (``{"type": "batch", "images": n, ...}``) is on disk;
whatever follows the last commit line is discarded when the file is read or resumed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from deit_tt.evaluation.errors import EvaluationError
from deit_tt.evaluation.header import RESULTS_FORMAT, check_compatible


@dataclass
class Results:
    """The committed content of a results file."""

    header: dict
    records: list[dict]  # image records, in file order
    batches: list[dict]  # commit lines
    discarded_lines: int = 0  # uncommitted or partial lines after the last commit


def read_results(path: str | os.PathLike) -> Results:
    """Parse a results file, ignoring whatever follows the last commit line (a batch cut short)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise EvaluationError(f"results file {path} does not exist; run the evaluation first") from None
    results, _ = _parse(path, data)
    if results is None:
        raise EvaluationError(f"{path} has no header line: it is empty or not a deit-tt results file")
    return results


def _parse(path: Path, data: bytes) -> tuple[Results | None, int]:
    """(Results or None when there is no complete header, byte offset just after the last commit)."""
    lines = data.split(b"\n")
    complete = lines[:-1]  # the last element is b"" or a partial line without its newline
    if not complete:
        return None, 0
    try:
        header = json.loads(complete[0])
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("type") != "header":
        raise EvaluationError(f"{path} is not a deit-tt results file (no header line); pass another --out")
    if header.get("format") != RESULTS_FORMAT:
        raise EvaluationError(f"{path} was written in format {header.get('format')!r}, not {RESULTS_FORMAT}; pass another --out")
    offset = len(complete[0]) + 1
    committed_offset = offset
    records: list[dict] = []
    batches: list[dict] = []
    pending: list[dict] = []
    bad_line: int | None = None
    for number, line in enumerate(complete[1:], start=2):
        offset += len(line) + 1
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            bad_line = bad_line or number
            continue
        if entry.get("type") == "batch":
            if bad_line is not None or entry.get("images") != len(pending):
                raise EvaluationError(
                    f"{path} is damaged at line {bad_line or number} (a committed batch is incomplete); "
                    "delete the file or pass another --out"
                )
            records.extend(pending)
            batches.append(entry)
            pending = []
            committed_offset = offset
        elif "id" in entry:
            pending.append(entry)
        else:
            bad_line = bad_line or number
    discarded = len(complete) - 1 - len(records) - len(batches) + (1 if lines[-1] else 0)
    seen: set[str] = set()
    for record in records:
        if record["id"] in seen:
            raise EvaluationError(f"{path} lists image {record['id']} twice; delete the file or pass another --out")
        seen.add(record["id"])
    return Results(header, records, batches, discarded), committed_offset


class ResultsWriter:
    """Appends committed batches to a results file (opened for a given header, resuming when compatible)."""

    def __init__(self, path: str | os.PathLike, header: dict, restart: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.existing = Results(header, [], [], 0)
        if restart and self.path.exists():
            self.path.unlink()
        data = self.path.read_bytes() if self.path.exists() else b""
        if data and b"\n" not in data and not b'{"type": "header"'.startswith(data[:17]):
            raise EvaluationError(f"{self.path} exists and is not a deit-tt results file; pass another --out")
        results, committed = _parse(self.path, data) if data else (None, 0)
        if results is None:
            self._write_fresh(header)
        else:
            check_compatible(self.path, results.header, header)
            if committed < len(data):
                with self.path.open("r+b") as handle:  # drop the uncommitted tail (batch cut short by a kill)
                    handle.truncate(committed)
                    handle.flush()
                    os.fsync(handle.fileno())
            self.existing = results
        self._handle = self.path.open("ab")

    def _write_fresh(self, header: dict) -> None:
        with self.path.open("wb") as handle:
            handle.write((json.dumps(header) + "\n").encode())
            handle.flush()
            os.fsync(handle.fileno())

    def append(self, records: list[dict], batch: dict) -> None:
        text = "".join(json.dumps(record) + "\n" for record in records)
        text += json.dumps({"type": "batch", "images": len(records), **batch}) + "\n"
        self._handle.write(text.encode())  # one write: an interrupt lands before or after the whole batch
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()
