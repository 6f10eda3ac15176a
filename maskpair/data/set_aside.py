"""Setting examples aside: train examples that the audit flags (`audit.flagged_by_audit`) or a reviewer marked
"problem" move to the `SET_ASIDE` list of the splits (read and checked, never batched); val and test stay as they
are, so scores stay comparable with and without. The loader (`review_log=`) and training (`train_without_flags`,
`review_log`) both come through `set_aside` here."""
from __future__ import annotations

import warnings

from maskpair.data.files import natural_key
from maskpair.data.splits import SET_ASIDE


def set_aside(splits: dict, names) -> dict:
    """`splits` with the train examples among `names` moved to SET_ASIDE; val and test unchanged."""
    doubted = set(names)
    moved = [name for name in splits["train"] if name in doubted]
    if not moved:
        return splits
    return {**splits, "train": [name for name in splits["train"] if name not in doubted],
            SET_ASIDE: sorted([*splits.get(SET_ASIDE, []), *moved], key=natural_key)}


def reviewed_problems(review_log, names) -> list[str]:
    """The names whose latest verdict in `review_log` is "problem" (a missing log file: none); names the log
    marks that are not in `names` are reported in a warning (a log of another dataset?)."""
    from maskpair.review.log import ReviewLog

    verdicts = ReviewLog(review_log).verdicts()
    problems = {name for name, entry in verdicts.items() if entry["verdict"] == "problem"}
    strangers = sorted(problems - set(names), key=natural_key)
    if strangers:
        warnings.warn(f"{review_log}: {len(strangers)} example(s) marked \"problem\" are not in this dataset "
                      f"({', '.join(strangers[:5])}{', ...' if len(strangers) > 5 else ''})", stacklevel=3)
    return sorted(problems & set(names), key=natural_key)

