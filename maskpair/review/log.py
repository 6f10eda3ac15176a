"""The durable review verdict log: one JSON line per verdict, appended and fsynced (`ReviewLog`).

Line format (JSON Lines, UTF-8, one object per line, the latest line per name wins):

    {"name": "17", "verdict": "problem", "note": "labels stop short", "reviewer": "ana",
     "time": "2025-01-31T14:02:11+01:00"}

- `verdict`: "aligned" or "problem"; an undo line restores the name's previous verdict, or "unreviewed"
  when the undone verdict was its first (a name whose latest line says "unreviewed" has no verdict).
- `reviewer`: who judged (default: the OS user); `time`: ISO 8601 with the local timezone offset.
- `undo: true` marks a line written by `ReviewLog.undo()`; it takes back the latest verdict line not yet
  taken back, so several undos walk back through the history. Lines are never rewritten or removed
  (except a torn last line: see `ReviewLog`).
Older lines without `reviewer` (or with a time without offset) still load.
"""
from __future__ import annotations

import csv
import getpass
import json
import os
from datetime import datetime
from pathlib import Path

from maskpair.errors import DataError
from maskpair.jsonio import dumps

VERDICTS = ("aligned", "problem")
UNREVIEWED = "unreviewed"  # only in undo lines: the undone verdict was the name's first
CSV_FIELDS = ("name", "verdict", "note", "reviewer", "time")


def default_reviewer() -> str:
    """The OS user name ("unknown" where the system has none, e.g. a container without a passwd entry)."""
    try:
        return getpass.getuser()
    except Exception:  # getpass raises OSError or KeyError when no user name can be found
        return "unknown"


def now_iso() -> str:
    """The local time with its UTC offset, to the second: 2025-01-31T14:02:11+01:00."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


class ReviewLog:
    """Verdicts as JSON Lines (format in the module docstring), appended; the latest line per name wins.

    `record` returns only after the line is written and fsynced, so a killed kernel loses no acknowledged
    verdict; a torn last line (no trailing newline: the process died mid-write) is ignored on load and cut
    off before the next append, so the log always loads. The file is read once, on first use; after that
    the verdicts live in memory and each `record` costs one append, whatever the log's length. One writer at
    a time: another process appending to the same file is not seen until the log is opened again.
    """

    def __init__(self, path):
        self.path = Path(path)
        self._latest: dict[str, dict] | None = None  # name -> its latest full line; None until loaded
        self._undo_stack: list[tuple[str, dict | None]] = []  # (name, its line before) per verdict not undone

    # -- reading

    def entries(self) -> list[dict]:
        """Every complete line in order, read from the file (a torn last line is ignored)."""
        if not self.path.exists():
            return []
        text = self.path.read_bytes().decode("utf-8", errors="replace")
        lines = text.split("\n")[:-1]  # the piece after the last newline is empty or torn
        found = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                raise DataError(f"{self.path}: line {number} is not a JSON verdict") from None
        return found

    def _loaded(self) -> dict[str, dict]:
        """The latest line per name, reading the file the first time only."""
        if self._latest is None:
            self._latest, self._undo_stack = {}, []
            for entry in self.entries():
                self._apply(entry)
        return self._latest

    def _apply(self, entry: dict):
        """Fold one line into the in-memory state (the same rule for loading and for appending)."""
        name = entry["name"]
        if entry.get("undo"):
            if self._undo_stack and self._undo_stack[-1][0] == name:
                self._undo_stack.pop()
        else:
            self._undo_stack.append((name, self._latest.get(name)))
        if entry["verdict"] == UNREVIEWED:
            self._latest.pop(name, None)
        else:
            self._latest[name] = entry

    def verdicts(self) -> dict[str, dict]:
        """{name: {"verdict", "note", "time"}} with the latest verdict per name (names without one left out)."""
        return {name: {k: entry[k] for k in ("verdict", "note", "time")} for name, entry in self._loaded().items()}

    def latest(self) -> dict[str, dict]:
        """{name: its latest full line} (with reviewer), for names that have a verdict; a copy."""
        return {name: dict(entry) for name, entry in self._loaded().items()}

    def verdict_of(self, name: str) -> str | None:
        """"aligned", "problem" or None (not reviewed), without copying anything."""
        entry = self._loaded().get(str(name))
        return entry["verdict"] if entry else None

    def __len__(self) -> int:
        """How many names have a verdict."""
        return len(self._loaded())

    # -- writing

    def record(self, name: str, verdict: str, note: str = "", reviewer: str | None = None) -> dict:
        """Append one verdict durably; verdict must be one of VERDICTS (else ValueError). Returns the line."""
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
        entry = {"name": str(name), "verdict": verdict, "note": str(note),
                 "reviewer": default_reviewer() if reviewer is None else str(reviewer), "time": now_iso()}
        self._append(entry)
        return entry

    def undo(self, reviewer: str | None = None) -> dict | None:
        """Take back the latest verdict not yet taken back: append a line restoring the name's previous verdict
        (or "unreviewed"). Returns that line, or None when there is nothing to undo."""
        self._loaded()
        if not self._undo_stack:
            return None
        name, before = self._undo_stack[-1]
        restored = {"verdict": before["verdict"], "note": before.get("note", "")} if before else \
            {"verdict": UNREVIEWED, "note": ""}
        entry = {"name": name, **restored, "reviewer": default_reviewer() if reviewer is None else str(reviewer),
                 "time": now_iso(), "undo": True}
        self._append(entry)
        return entry

    def _append(self, entry: dict):
        """Write one line with a single O_APPEND write, fsync it, then fold it into memory."""
        self._loaded()
        line = (dumps(entry) + "\n").encode()
        new_file = not self.path.exists()
        if new_file:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            _cut_torn_tail(fd)
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        if new_file:
            _fsync_dir(self.path.parent)  # so the new file's directory entry survives a crash too
        self._apply(entry)

    def export_csv(self, path, names=None) -> Path:
        """Write the latest verdict per name as CSV (name, verdict, note, reviewer, time); `names`: which and in
        what order (default: every reviewed name, in the order first reviewed). Returns the path."""
        latest = self._loaded()
        chosen = [str(name) for name in (latest if names is None else names) if str(name) in latest]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, CSV_FIELDS, extrasaction="ignore")
            writer.writeheader()
            for name in chosen:
                writer.writerow({field: latest[name].get(field, "") for field in CSV_FIELDS})
        return path


def _cut_torn_tail(fd: int):
    """Drop a partial last line left by a write that was killed; reads only the end of the file."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    end = size
    while end > 0:  # walk back block by block to the last newline: only the torn line is read
        start = max(0, end - 4096)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            end = start + newline + 1
            break
        end = start
    os.ftruncate(fd, end)
    os.fsync(fd)


def _fsync_dir(folder: Path):
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
