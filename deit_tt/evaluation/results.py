"""The results file: JSON lines, a header, then per batch one line per image and a commit line.

A batch counts only once its commit line (``{"type": "batch", "images": n, ...}``) is on disk;
whatever follows the last commit line is discarded when the file is read or resumed.

One process at a time writes a results file: it holds an OS lock (``flock``) on ``<file>.lock``,
which names it; the OS releases the lock when the process ends, however it ends (even SIGKILL), so a
crashed run never blocks the next one.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from deit_tt import settings
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


_HEADER_START = b'{"type": "header"'


def check_results_target(path: str | os.PathLike) -> Path:
    """Refuse, with one line, a results path that cannot be written or that holds something else than a
    results file (which ``--restart`` would destroy). Cheap: the CLI calls it before loading anything."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise EvaluationError(f"results file {path} is a directory; pass --out with a file path (e.g. {path / 'results.jsonl'})")
    folder = path.parent
    existing = next((parent for parent in (folder, *folder.parents) if parent.exists()), None)
    if existing is not None and not existing.is_dir():
        raise EvaluationError(f"cannot create results file {path}: {existing} is a file, not a folder; pass another --out or ${settings.RESULTS_DIR.variable}")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise EvaluationError(f"cannot create results file {path}: folder {existing} is not writable; pass another --out or ${settings.RESULTS_DIR.variable}")
    if not path.exists():
        return path
    if not path.is_file():
        raise EvaluationError(f"{path} is not a regular file; pass --out with a results file path")
    if not os.access(path, os.R_OK | os.W_OK):
        raise EvaluationError(f"results file {path} is read-only; make it writable or pass another --out")
    with path.open("rb") as handle:
        first = handle.readline(len(_HEADER_START))
    if first and not (first.startswith(_HEADER_START) or _HEADER_START.startswith(first)):
        raise EvaluationError(f"{path} exists and is not a deit-tt results file (neither resumed nor replaced); pass another --out")
    return path


class ResultsLock:
    """This process's exclusive hold on a results file: ``flock`` on ``<file>.lock``, which names the holder.

    Re-entrant within a process (the CLI takes it before loading the model, ``evaluate`` again when it
    opens the file); the last ``release`` unlinks the lock file. The OS drops the lock of a dead process.
    """

    _held: dict[Path, list] = {}  # lock path -> [file descriptor, holders]

    def __init__(self, path: str | os.PathLike):
        self.results_path = Path(path).expanduser()
        self.path = self.results_path.with_name(self.results_path.name + ".lock")
        key = self.path.absolute()
        if key in self._held:
            self._held[key][1] += 1
        else:
            self._held[key] = [self._acquire(), 1]
        self._key = key

    def _acquire(self) -> int:
        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                raise EvaluationError(f"cannot create the lock file {self.path} ({error.strerror}); pass another --out") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                holder = " ".join(os.read(fd, 4096).decode(errors="replace").split()) or "another process"
                os.close(fd)
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise EvaluationError(f"cannot lock {self.path} ({error.strerror}); pass another --out") from None
                raise EvaluationError(
                    f"{self.results_path} is being written by another evaluation ({holder}); wait for it to finish "
                    "(it can be resumed afterwards), or pass another --out"
                ) from None
            try:
                same_file = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same_file = False
            if same_file:  # else the holder removed the lock file between our open and flock: try again
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        command = " ".join(" ".join(sys.orig_argv).split())[:300]  # one line, whatever the arguments hold
        os.write(fd, f"process {os.getpid()}: {command}\n".encode(errors="replace"))
        return fd

    def release(self) -> None:
        entry = self._held.get(self._key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del self._held[self._key]
            try:
                self.path.unlink()  # while still locked, so no other process can be holding this file
            except OSError:
                pass
            os.close(entry[0])
        self._key = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.release()


class ResultsWriter:
    """Appends committed batches to a results file (opened for a given header, resuming when compatible),
    holding its ``ResultsLock`` until ``close``. ``restart`` replaces only a results file."""

    def __init__(self, path: str | os.PathLike, header: dict, restart: bool = False):
        self.path = check_results_target(path)
        self._lock = ResultsLock(self.path)
        try:
            self._open(header, restart)
        except BaseException:
            self._lock.release()
            raise

    def _open(self, header: dict, restart: bool) -> None:
        check_results_target(self.path)
        self.existing = Results(header, [], [], 0)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if restart and self.path.exists():
                self.path.unlink()
            data = self.path.read_bytes() if self.path.exists() else b""
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
        except OSError as error:
            raise EvaluationError(f"cannot write results file {self.path} ({error.strerror or error}); pass another --out") from None

    def _write_fresh(self, header: dict) -> None:
        with self.path.open("wb") as handle:
            handle.write((json.dumps(header) + "\n").encode())
            handle.flush()
            os.fsync(handle.fileno())

    def append(self, records: list[dict], batch: dict) -> None:
        text = "".join(json.dumps(record) + "\n" for record in records)
        text += json.dumps({"type": "batch", "images": len(records), **batch}) + "\n"
        try:
            self._handle.write(text.encode())  # one write: an interrupt lands before or after the whole batch
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as error:
            raise EvaluationError(
                f"cannot write results file {self.path} ({error.strerror or error}); every batch committed before is kept: "
                "free space (or fix the permissions) and run the same command again to resume"
            ) from None

    def close(self) -> None:
        try:
            self._handle.close()
        except OSError:
            pass  # a failed flush of a batch already reported by append
        finally:
            self._lock.release()
