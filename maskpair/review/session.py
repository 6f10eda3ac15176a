"""The review's state, without any widget: the examples in review order (filters, sort), the current one, steps,
verdicts written to the durable `ReviewLog` (and undone), and the audit's flags, which may arrive later from a
background thread. `ReviewApp` (app.py) only shows this state and forwards the reviewer's events to it; tests and
scripts drive it directly.

    session = ReviewSession("data/spine-mri", reviewer="ana")
    session.load_audit(audit_paths=["outputs/02_verify_alignment/audit.json"])  # flags now or later
    session.record("problem", "mask 3 px low"); session.step(1); session.undo()
"""
from __future__ import annotations

import functools
import threading
import traceback
from pathlib import Path

import numpy as np

from maskpair import audit
from maskpair.data.loader import DataLoader
from maskpair.review.background import background_audit, current_audit_report
from maskpair.review.listing import (
    SORT_KEYS,
    VERDICT_FILTERS,
    default_log_path,
    find_name,
    flag_codes,
    progress_text,
    read_label_issues,
    select_names,
    sort_names,
)
from maskpair.review.log import UNREVIEWED, ReviewLog, default_reviewer

AUDIT_EVENTS = ("audit progress", "audit done", "audit failed")  # what `listeners` are called with


def _locked(method):
    """Run the method holding the session's lock: the audit's thread may hand its report in meanwhile."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self.lock:
            return method(self, *args, **kwargs)

    return locked


class ReviewSession:
    """One reviewer's pass over a dataset: which examples, in what order, which one is shown, the verdicts.

    data_dir: the dataset; log_path: the verdict log (default `<data_dir>.verdicts.jsonl` beside the data);
    reviewer: written with each verdict (default: the OS user); label_issues: optional label_issues.json (ranks to
    sort and filter by; with a ranking the review opens sorted by rank). It opens at the first example without a
    verdict. `notice` holds a short message about the last action (a name not found, nothing to undo), "" if none.
    Call `load_audit` for the audit's flags.
    """

    def __init__(self, data_dir, log_path=None, *, reviewer: str | None = None, label_issues=None):
        self.data_dir = Path(data_dir)
        # every pair at its own size, even where dataset.json's max_size reduces them for training: the renderer
        # shows a large pair sampled down to the panel and zooms into it at full resolution
        self.data = DataLoader(self.data_dir, batch_size=1, cache=False, progress=False, full_size=True)
        self.names = list(self.data.names)
        self.natural = {name: i for i, name in enumerate(self.names)}
        self.log = ReviewLog(log_path if log_path else default_log_path(self.data_dir))
        self.reviewer = reviewer or default_reviewer()
        self.verdicts = self.log.latest()  # name -> its latest line; kept in step with every record/undo
        self.issues = read_label_issues(label_issues) if label_issues else {}
        self.ranks = {name: entry["rank"] for name, entry in self.issues.items() if entry.get("rank") is not None}
        self.lock = threading.RLock()  # actions (the kernel's threads) and the background audit's report

        # the list: filters and sort (set_filters); with a label-issue ranking the most suspect come first
        self.flag_filter, self.verdict_filter, self.max_rank = "any", "any", 0
        self.sort_by, self.descending = ("rank" if self.ranks else "name"), False
        self.auto_advance = True  # after a verdict, show the next unreviewed example
        self.notice = ""

        # the audit (load_audit)
        self.report, self.entries, self.flags = None, {}, None
        self.audit_source = "none"  # "given", "reused PATH", "running", "ran in N s"
        self.audit = None  # the BackgroundAudit this session waits for, if any
        self.audit_progress: tuple[int, int] | None = None
        self.audit_error: str | None = None  # the background audit's traceback, if it failed
        self.audit_failure: str | None = None  # its first line
        self.listeners: list = []  # called with one of AUDIT_EVENTS, from the audit's thread
        self._audit_applied = threading.Event()  # set once the background report (or failure) has been taken in

        self._reorder()
        self.current = next((name for name in self.order if name not in self.verdicts), self.order[0])

    # -- moving

    @_locked
    def go_to(self, name: str):
        """Make `name` the current example (kept in the list even when the filters exclude it)."""
        if name not in self.natural:
            raise KeyError(f"no example named {name!r}")
        if name not in self.position:
            self._reorder(keep=name)
        self.current = name

    @_locked
    def step(self, delta: int):
        """Move by delta within the list (clamped at its ends)."""
        position = int(np.clip(self.position[self.current] + delta, 0, len(self.order) - 1))
        self.notice = ""
        self.go_to(self.order[position])

    @_locked
    def jump_to(self, text: str) -> str | None:
        """Go to the example whose name is typed (exact, else a unique match ignoring case or a unique part);
        the name, or None (blank text: nothing happens; no single match: a notice)."""
        if not text.strip():
            return None
        name = find_name(text, self.names)
        if name is None:
            self.notice = f"no single example matches {text.strip()!r}"
            return None
        self.notice = ""
        self.go_to(name)
        return name

    def next_unreviewed(self) -> str | None:
        """The first example after the current one in the list without a verdict (wrapping), or None."""
        with self.lock:
            order, start = self.order, self.position.get(self.current, -1)
        for name in order[start + 1:] + order[:max(start, 0)]:
            if name not in self.verdicts:
                return name
        return None

    def upcoming(self) -> list[str]:
        """The examples the reviewer will probably see next: the neighbours in the list, the next unreviewed."""
        with self.lock:
            position = self.position[self.current]
            ahead = [self.order[i] for i in (position + 1, position - 1) if 0 <= i < len(self.order)]
        following = self.next_unreviewed()
        return ahead + ([following] if following and following not in ahead else [])

    # -- verdicts

    @_locked
    def record(self, verdict: str, note: str = "") -> dict:
        """Write the verdict (and note) for the current example durably; then, with auto_advance, go to the next
        unreviewed example. Returns the log line."""
        name = self.current
        line = self.verdicts[name] = self.log.record(name, verdict, note, self.reviewer)
        target = self.next_unreviewed() if self.auto_advance else name
        self.notice = "" if target else "every example in this list has a verdict"
        self._reorder(keep=target or name)  # a verdict filter may now exclude it
        self.go_to(target or name)
        return line

    @_locked
    def undo(self) -> dict | None:
        """Take back the last verdict in the log and go to that example; the undo line, or None (a notice)."""
        line = self.log.undo(self.reviewer)
        if line is None:
            self.notice = "nothing to undo"
            return None
        name = line["name"]
        if line["verdict"] == UNREVIEWED:
            self.verdicts.pop(name, None)
        else:
            self.verdicts[name] = line
        self.notice = f"undone: {name} is {line['verdict']} again"
        self._reorder(keep=name)
        self.go_to(name)
        return line

    def export_csv(self, path=None) -> Path:
        """Write the verdicts (latest per name, in name order) to CSV, by default beside the log."""
        path = Path(path) if path else self.log.path.with_suffix(".csv")
        self.log.export_csv(path, names=self.names)
        self.notice = f"wrote {path} ({sum(name in self.verdicts for name in self.names)} verdicts)"
        return path

    # -- the list

    @_locked
    def set_filters(self, *, flag: str | None = None, verdict: str | None = None, max_rank: int | None = None,
                    sort_by: str | None = None, descending: bool | None = None):
        """Change any of the filters (flag: "any", "flagged", "not flagged" or a flag code; verdict: one of
        VERDICT_FILTERS; max_rank > 0 keeps ranks 1..max_rank) or the sort (one of SORT_KEYS), and rebuild the
        list. The current example stays when it is in the new list, else the first one after it (in name order);
        when nothing matches, a notice, and the current example stays."""
        if verdict is not None and verdict not in VERDICT_FILTERS:
            raise ValueError(f"verdict filter must be one of {VERDICT_FILTERS}, got {verdict!r}")
        if sort_by is not None and sort_by not in SORT_KEYS:
            raise ValueError(f"sort key must be one of {SORT_KEYS}, got {sort_by!r}")
        if max_rank is not None and max_rank < 0:
            raise ValueError(f"max_rank must be 0 (no limit) or more, got {max_rank}")
        changes = {"flag_filter": flag, "verdict_filter": verdict, "max_rank": max_rank, "sort_by": sort_by,
                   "descending": descending}
        for attribute, value in changes.items():
            if value is not None:
                setattr(self, attribute, value)
        self._reorder()
        self.notice = ""
        if not self.order:
            self.notice = "no example matches these filters; the current one stays"
            self._reorder(keep=self.current)
        elif self.current not in self.position:
            after = [name for name in self.order if self.natural[name] > self.natural[self.current]]
            self.current = after[0] if after else self.order[0]

    def _reorder(self, keep: str | None = None):
        """self.order from the filters and the sort; `keep` stays in it even when the filters exclude it."""
        chosen = select_names(self.names, self.flags, self.verdicts, self.flag_filter, self.verdict_filter,
                              self.ranks, self.max_rank)
        if keep is not None and keep not in set(chosen):
            chosen.append(keep)
        self.order = sort_names(chosen, self.sort_by, self.flags, self.verdicts, self.ranks, self.descending,
                                self.natural)
        self.position = {name: i for i, name in enumerate(self.order)}

    def page(self, rows: int) -> tuple[int, list[str]]:
        """(index of its first row, names) of the page of `rows` examples of the list holding the current one."""
        with self.lock:
            start = self.position[self.current] // rows * rows
            return start, self.order[start:start + rows]

    def flag_choices(self) -> list[tuple[str, str]]:
        """The flag filter's choices as (label with its count, value); only "any" before the audit's report."""
        if self.flags is None:
            return [("any", "any")]
        counts = {}
        for flags in self.flags.values():
            for code in flag_codes(flags):
                counts[code] = counts.get(code, 0) + 1
        flagged = sum(1 for flags in self.flags.values() if flags)
        return ([("any", "any"), (f"flagged ({flagged})", "flagged"),
                 (f"not flagged ({len(self.flags) - flagged})", "not flagged")]
                + [(f"{code} ({count})", code) for code, count in sorted(counts.items())])

    def filter_text(self) -> str:
        """The filters and the sort in words ("flags flagged, unreviewed, by rank"; "all")."""
        parts = [f"flags {self.flag_filter}" if self.flag_filter != "any" else "",
                 self.verdict_filter if self.verdict_filter != "any" else "",
                 f"rank ≤ {self.max_rank}" if self.max_rank else ""]
        text = ", ".join(part for part in parts if part) or "all"
        return text + (f", by {self.sort_by}" if self.sort_by != "name" else "")

    def progress(self) -> str:
        """'reviewed 2 / 20 · 1 problem(s) · reviewer ana'."""
        problems = sum(1 for name in self.names if (self.verdicts.get(name) or {}).get("verdict") == "problem")
        return f"{progress_text(self.names, self.verdicts)} · {problems} problem(s) · reviewer {self.reviewer}"

    # -- the audit's findings

    def load_audit(self, report: dict | None = None, audit_paths=(), run_audit: bool = True):
        """Take the audit's flags: `report` when given, else the first report among `audit_paths` current for the
        data, else (run_audit) an audit in a background thread, its report written to audit_paths[0] (through
        `audit.write_report`): its flags are taken in when it ends and every listener is called ("audit done" or
        "audit failed"; "audit progress" meanwhile). Running it again in this process joins the running audit."""
        audit_paths = [Path(path) for path in audit_paths]
        if report is None:
            report, found_at = current_audit_report(audit_paths, self.data_dir)
            source = f"reused {found_at}"
        else:
            source = "given"
        if report is not None:
            self.use_report(report, source)
        elif run_audit:
            self.audit_source = "running"
            self.audit = background_audit(self.data_dir, audit_paths[0] if audit_paths else None)
            self.audit.listeners.append(self._audit_progress)
            self.audit.future.add_done_callback(self._audit_done)

    @_locked
    def use_report(self, report: dict, source: str = "given"):
        """Take an audit report's flags and measures (the list is rebuilt; the current example stays)."""
        self.report, self.audit_source = report, source
        self.entries = {entry["name"]: entry for entry in report["examples"]}
        self.flags = {name: entry["flags"] for name, entry in self.entries.items()}
        if self.flag_filter not in {value for _, value in self.flag_choices()}:
            self.flag_filter = "any"
        self._reorder(keep=self.current)

    def _audit_progress(self, done: int, total: int):
        """From the audit's thread, without the lock: progress must never wait for the reviewer."""
        self.audit_progress = (done, total)
        self._notify("audit progress")

    def _audit_done(self, future):
        """Take the finished audit's report, or keep why it failed (called from the audit's thread)."""
        try:
            try:
                report = future.result()
            except Exception as err:  # noqa: BLE001  anything the audit raised: kept and shown, not lost in a thread
                with self.lock:
                    self.audit_error = "".join(traceback.format_exception(err))
                    self.audit_failure = f"{type(err).__name__}: {err}".splitlines()[0][:200]
                    self._notify("audit failed")
            else:
                with self.lock:
                    self.use_report(report, f"ran in {self.audit.seconds:.0f} s")
                    self._notify("audit done")
        finally:
            self._audit_applied.set()

    def _notify(self, event: str):
        for listener in list(self.listeners):
            listener(event)

    def audit_status(self) -> str:
        """The audit's state in words: 'audit (given): 3 flagged', 'audit running: 40 / 2,000 pairs', ..."""
        if self.report is not None:
            return f"audit ({self.audit_source}): {len(audit.flagged(self.report))} flagged"
        if self.audit_failure is not None:
            return f"audit failed: {self.audit_failure}"
        if self.audit is not None:
            if self.audit_progress is None:
                return "audit running: starting…"
            return "audit running: {:,} / {:,} pairs".format(*self.audit_progress)
        return "audit: none (no flags)"

    def wait_for_audit(self, timeout: float | None = None) -> dict | None:
        """The report, after waiting (at most `timeout` s) for a background audit to be taken in."""
        if self.audit is not None:
            self._audit_applied.wait(timeout)
        return self.report

    # -- the conclusion

    def summary(self) -> str:
        """One paragraph stating where the review stands (the notebook's conclusion)."""
        reviewed = [name for name in self.names if name in self.verdicts]
        problems = [name for name in reviewed if self.verdicts[name]["verdict"] == "problem"]
        if self.report is not None:
            flagged = audit.flagged(self.report)
            listed = f": {', '.join(flagged[:20])}{' …' if len(flagged) > 20 else ''}" if flagged else ""
            audit_text = f"The audit ({self.audit_source}) flags {len(flagged)} of {len(self.names)} pairs{listed}. "
        elif self.audit_failure is not None:
            audit_text = f"The audit failed ({self.audit_failure}). "
        elif self.audit is not None:
            audit_text = "The audit is still running in the background; its flags appear in the UI when it ends. "
        else:
            audit_text = "No audit report was used. "
        return (f"{len(self.names)} pairs. {audit_text}Reviewed {len(reviewed)} / {len(self.names)}, "
                f"{len(problems)} marked as a problem" + (f" ({', '.join(problems[:20])})" if problems else "")
                + f", in {self.log.path}. Training leaves the problem pairs out when given this log (notebook 04).")

