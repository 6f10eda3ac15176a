"""The audit behind the review: a current saved report, or one audit per data folder running in a background
thread of this process, so the review appears at once and takes the flags when they arrive."""
from __future__ import annotations

import threading
import time
from pathlib import Path

from maskpair import audit


def current_audit_report(paths, data_dir) -> tuple[dict | None, Path | None]:
    """(report, its path) for the first of `paths` holding an audit report current for the data, else (None, None)."""
    for path in paths:
        if Path(path).is_file():
            report = audit.current_report(path, data_dir)
            if report is not None:
                return report, Path(path)
    return None, None



class BackgroundAudit:
    """One audit of a data folder in a daemon thread; its report (or exception) in `future`, written to `save_to`
    when given. Progress goes to every callable in `listeners` (done, total)."""

    def __init__(self, data_dir, save_to=None):
        from concurrent.futures import Future

        self.data_dir, self.save_to = Path(data_dir), save_to
        self.future, self.listeners, self.seconds = Future(), [], 0.0
        threading.Thread(target=self._run, name=f"review-audit {self.data_dir.name}", daemon=True).start()

    def _run(self):
        started = time.monotonic()
        try:
            report = audit.audit_dataset(self.data_dir, progress=self._progress)
            if self.save_to:
                audit.write_report(report, self.save_to)
        except Exception as err:  # noqa: BLE001  handed to whoever waits: a thread has no one to raise to
            self.future.set_exception(err)
        else:
            self.seconds = time.monotonic() - started
            self.future.set_result(report)

    def _progress(self, done: int, total: int):
        for listener in list(self.listeners):
            try:
                listener(done, total)
            except Exception:  # noqa: BLE001  a listener's widget may be gone; the audit goes on
                continue



_RUNNING_AUDITS: dict[str, BackgroundAudit] = {}
_RUNNING_AUDITS_LOCK = threading.Lock()



def background_audit(data_dir, save_to=None) -> BackgroundAudit:
    """The audit of `data_dir` running in this process, or a new one: running a notebook cell again must not
    start a second audit of the same data beside the first."""
    key = str(Path(data_dir).resolve())
    with _RUNNING_AUDITS_LOCK:
        running = _RUNNING_AUDITS.get(key)
        if running is None or running.future.done():  # a finished audit may be stale: the data can change
            running = _RUNNING_AUDITS[key] = BackgroundAudit(data_dir, save_to)
        return running
