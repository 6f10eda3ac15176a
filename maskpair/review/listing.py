"""The list of examples under review: filters, sorting, finding a name, the table's rows and the text about one
example (plain functions of names, flags, verdicts and ranks)."""
from __future__ import annotations

import html
import json
import math
from pathlib import Path

VERDICT_FILTERS = ("any", "unreviewed", "aligned", "problem")
SORT_KEYS = ("name", "flags", "verdict", "rank")


def flag_codes(flags) -> list[str]:
    """The codes of a list of flags ("misaligned:flip_lr" -> "misaligned"), without repeats, in order."""
    return list(dict.fromkeys(flag.split(":")[0] for flag in flags))



def progress_text(names, verdicts) -> str:
    """'reviewed 12 / 20' counting only names of this dataset (verdicts: a mapping name -> verdict)."""
    return f"reviewed {sum(name in verdicts for name in names)} / {len(names)}"



def select_names(names, flags, verdicts, flag: str = "any", verdict: str = "any", ranks=None,
                 max_rank: int = 0) -> list[str]:
    """The names passing the filters, in the given order.

    flags: {name: [flags]} or None (no audit yet: flag filters pass everything); flag: "any", "flagged",
    "not flagged" or a flag code; verdicts: {name: anything with a "verdict"}; verdict: one of VERDICT_FILTERS;
    ranks: {name: label-problem rank}; max_rank > 0 keeps ranks 1..max_rank.
    """
    if verdict not in VERDICT_FILTERS:
        raise ValueError(f"verdict filter must be one of {VERDICT_FILTERS}, got {verdict!r}")

    def passes(name):
        if flags is not None and flag != "any":
            codes = flag_codes(flags.get(name, ()))
            if not (bool(codes) if flag == "flagged" else not codes if flag == "not flagged" else flag in codes):
                return False
        if verdict != "any":
            given = verdicts.get(name)
            if (given is None) != (verdict == "unreviewed") or (given is not None and given["verdict"] != verdict):
                return False
        return not max_rank or (ranks or {}).get(name, math.inf) <= max_rank

    return [name for name in names if passes(name)]



def sort_names(names, by: str, flags, verdicts, ranks=None, descending: bool = False, natural=None) -> list[str]:
    """`names` sorted by "name" (natural order), "flags" (most first), "verdict" (unreviewed, problem, aligned)
    or "rank" (1 first, unranked last); ties keep natural order. natural: {name: position} (default: given)."""
    if by not in SORT_KEYS:
        raise ValueError(f"sort key must be one of {SORT_KEYS}, got {by!r}")
    natural = natural or {name: i for i, name in enumerate(names)}
    verdict_order = {None: 0, "problem": 1, "aligned": 2}
    keys = {
        "name": lambda name: natural[name],
        "flags": lambda name: (-len((flags or {}).get(name, ())), natural[name]),
        "verdict": lambda name: (verdict_order[(verdicts.get(name) or {}).get("verdict")], natural[name]),
        "rank": lambda name: ((ranks or {}).get(name, math.inf), natural[name]),
    }
    return sorted(names, key=keys[by], reverse=descending)



def find_name(text: str, names) -> str | None:
    """The name typed: exact, else the one name equal ignoring case, else the one name containing the text."""
    text = text.strip()
    if not text:
        return None
    if text in names:
        return text
    for rule in (lambda name: name.lower() == text.lower(), lambda name: text.lower() in name.lower()):
        found = [name for name in names if rule(name)]
        if len(found) == 1:
            return found[0]
    return None



def table_row(name: str, flags, verdict: dict | None, rank, with_rank: bool, width: int = 16) -> str:
    """One fixed-width row of the example table: name, verdict, [rank,] flags."""
    row = f"{name[:width]:<{width}} {(verdict or {}).get('verdict', '-'):<9}"
    if with_rank:
        row += f" {rank if rank is not None else '-':>5}"
    flags_text = "…" if flags is None else ", ".join(flags) or "-"
    return f"{row} {flags_text}"[:120]



def table_header(with_rank: bool, width: int = 16) -> str:
    """The column titles matching `table_row`."""
    return f"{'name':<{width}} {'verdict':<9}" + (f" {'rank':>5}" if with_rank else "") + " flags"



def describe(entry: dict | None, verdict: dict | None, issue: dict | None = None, audited: bool = True) -> str:
    """HTML listing the audit's flags and main measures for one example, its label issue and its verdict
    (audited: whether there is a report yet, so a missing entry reads right)."""
    rows = []
    if entry is None:
        rows.append("<i>not in the audit report</i>" if audited else "<i>audit: not yet available</i>")
    else:
        rows.append(f"<b>flags:</b> {html.escape(', '.join(entry['flags']) or 'none')}")
        rows += [f"{html.escape(label)}: {c['components']} component(s), {c['pixels']} px"
                 for label, c in entry.get("classes", {}).items()]
        if entry.get("order"):
            rows.append(f"column (top to bottom): {html.escape(entry['order']['sequence'] or '-')}")
        if entry.get("alignment"):
            a = entry["alignment"]
            rows.append(f"edge fit {a['score']:.3f}; best alternative {html.escape(str(a['best_alternative']))} "
                        f"{a['alternative_score']:.3f} (margin {a['margin']})")
    if issue:
        share = issue.get("mislabelled_share")
        looks = f"; {share:.1%} of its labelled pixels look mislabelled" if share is not None else ""
        rows.append(f"<b>label issue:</b> rank {issue.get('rank')}, {html.escape(str(issue.get('kind', '')))}{looks}")
    if verdict:
        by = f" by {html.escape(verdict['reviewer'])}" if verdict.get("reviewer") else ""
        rows.append(f"<b>verdict:</b> {verdict['verdict']} {html.escape(verdict.get('note', ''))}"
                    f" <small>({html.escape(verdict.get('time', ''))}{by})</small>")
    else:
        rows.append("<b>verdict:</b> -")
    return "<br>".join(rows)



def read_label_issues(path) -> dict[str, dict]:
    """{name: entry} of a label_issues.json (docs/architecture.md), each `picture` made an absolute path."""
    path = Path(path)
    found = {}
    for entry in json.loads(path.read_text())["examples"]:
        entry = dict(entry)
        if entry.get("picture"):
            entry["picture"] = str((path.parent / entry["picture"]).resolve())
        found[str(entry["name"])] = entry
    return found



def default_log_path(data_dir) -> Path:
    """<data_dir>.verdicts.jsonl beside the data: verdicts are a person's work, not disposable output."""
    data_dir = Path(data_dir)
    return data_dir.parent / f"{data_dir.name}.verdicts.jsonl"
