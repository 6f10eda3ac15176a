"""The durable review verdict log: one JSON line per verdict, appended and fsynced (`ReviewLog`)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from errors import DataError

VERDICTS = ("aligned", "problem")


class ReviewLog:
    """Verdicts as JSON Lines, one `{"name", "verdict", "note", "time"}` object per line, appended.

    `record` returns only after the line is flushed and fsynced, so a killed kernel loses no acknowledged
    verdict; a torn last line (no trailing newline: the process died mid-write) is ignored on load and cut
    off before the next append, so the log always loads. The latest line per name wins.
    """

    def __init__(self, path):
        self.path = Path(path)

    def record(self, name: str, verdict: str, note: str = "") -> dict:
        """Append one verdict durably; verdict must be one of VERDICTS (else ValueError)."""
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
        entry = {"name": str(name), "verdict": verdict, "note": str(note), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode()
        new_file = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._cut_torn_tail()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        if new_file:
            _fsync_dir(self.path.parent)  # so the new file's directory entry survives a crash too
        return entry

    def _cut_torn_tail(self):
        """Drop a partial last line left by a write that was killed, so the next line starts clean."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)
                handle.flush()
                os.fsync(handle.fileno())

    def entries(self) -> list[dict]:
        """Every complete verdict line in order (a torn last line is ignored)."""
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

    def verdicts(self) -> dict[str, dict]:
        """{name: {"verdict", "note", "time"}} with the latest verdict per name."""
        return {entry["name"]: {k: entry[k] for k in ("verdict", "note", "time")} for entry in self.entries()}


def _fsync_dir(folder: Path):
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
