"""The audit's report: the flag vocabulary, the report built from every pair's measures, its settings and key
(a saved report is reused while data and settings are unchanged), the summary, and reading and writing it."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from maskpair.audit import alignment, content, domain
from maskpair.audit.alignment import decide_alignment
from maskpair.audit.content import content_flags, duplicates
from maskpair.audit.domain import short_column_flags
from maskpair.data.description import DESCRIPTION_FILE, read_declared
from maskpair.data.files import dataset_files
from maskpair.jsonio import write_json

REPORT_FORMAT = 3   # part of the report's key: a report of another format is never reused (3: oriented edge fit,
                    # evidence from a cluster-robust standard error judged against the median pair's)
# Every flag starts with one of these code words, then (where shown) a colon and a detail.
FLAG_CODES = {
    "empty_mask": "the mask has no pixel of any class but the background (ignore pixels do not count)",
    "missing_class": "missing_class:<label> -- a non-empty mask without any pixel of <label>, a class that most of "
                     "this dataset's non-empty masks hold (content.MISSING_CLASS_SHARE of them) as a sizeable part of their "
                     "labels (content.MAJOR_CLASS_SHARE)",
    "duplicate_of": "duplicate_of:<name> -- the image or the mask is byte-identical to example <name>'s "
                    "(the entry's duplicate says which)",
    "order_gap": "only with the description's audit switch \"alternating\": [<a>, <b>]: "
                 "order_gap:<a>-<a>@<top|bottom> -- two <a> levels follow each other along the column with no "
                 "<b> level between them, in the top or bottom half of the column; "
                 "order_gap:unlabelled_<a>@<top|bottom> -- one step beyond that end of the labelled column the "
                 "image looks like an <a> level (one seems missing there)",
    "short_column": "only with the description's audit switch \"extent\": true: short_column:<top|bottom> -- the "
                    "labels end further from that edge of the image than in most of this dataset's masks (by "
                    "more than domain.SHORT_COLUMN of the image height): the annotation may stop short",
    "misaligned": "misaligned:<alternative> -- another placement of a mask fits the image's edges clearly better "
                  "than the given one (after the dataset-wide offset, if any; see alignment.gain): shift(dy,dx) "
                  "(move the mask dy rows down, dx columns right), flip_lr, flip_ud, transpose, or "
                  "swapped_with:<name> (the mask stored with example <name>)",
}
DATASET_FINDING_CODES = {
    "dataset_offset": "the masks fit the images best when all are moved by the same shift [dy, dx]: a "
                      "dataset-wide offset (of the labelling tool or a conversion), judged once, not per pair",
}


def settings(options: dict) -> dict:
    """Everything the findings depend on besides the data: thresholds and the description's audit switches."""
    return {"format": REPORT_FORMAT, "audit": dict(sorted(options.items())),
            "analysis_side": alignment.ANALYSIS_SIDE, "edge_sigma": alignment.EDGE_SIGMA,
            "edge_quantile": alignment.EDGE_QUANTILE, "normal_sigma": alignment.NORMAL_SIGMA,
            "max_shift": alignment.MAX_SHIFT, "min_shift": alignment.MIN_SHIFT, "tolerance": alignment.TOLERANCE,
            "coarse_side": alignment.COARSE_SIDE, "screen_margin": alignment.SCREEN_MARGIN,
            "swap_candidates": alignment.SWAP_CANDIDATES, "min_gain": alignment.MIN_GAIN,
            "above_median": alignment.ABOVE_MEDIAN, "evidence": alignment.EVIDENCE,
            "evidence_above_median": alignment.EVIDENCE_ABOVE_MEDIAN, "noise_cell": alignment.NOISE_CELL,
            "missing_class_share": content.MISSING_CLASS_SHARE,
            "major_class_share": content.MAJOR_CLASS_SHARE, "short_column": domain.SHORT_COLUMN}



def build_report(names, measures, labels, options, score_in_full) -> dict:
    """The report from every pair's measures (see `measure_pair`); score_in_full: see `decide_alignment`."""
    labels = tuple(labels)
    content_found = content_flags(measures, labels)
    same_image = duplicates(names, [m["image_digest"] for m in measures])
    same_mask = duplicates(names, [m["mask_digest"] for m in measures])
    short = short_column_flags([m["margins"] for m in measures]) if options.get("extent") else [[]] * len(names)
    placements, summary = decide_alignment(names, [m["fit"] for m in measures], score_in_full)
    examples = []
    for i, (name, m) in enumerate(zip(names, measures)):
        dup = {kind: found[name] for kind, found in (("image", same_image), ("mask", same_mask)) if name in found}
        entry = {"name": name, "flags": content_found[i] + sorted({f"duplicate_of:{other}" for other in dup.values()}),
                 "classes": m["classes"], "duplicate": dup}
        if "order" in m:
            entry["flags"] += m["order"][0]
            entry["order"] = m["order"][1]
        if options.get("extent") and m["margins"] is not None:
            entry["edge_margins"] = [round(float(share), 3) for share in m["margins"]]  # (top, bottom) unlabelled
        entry["flags"] += short[i]
        if i in placements:
            entry["alignment"] = placements[i]
            if placements[i]["misaligned"]:
                entry["flags"].append(f"misaligned:{placements[i]['best_alternative']}")
        examples.append(entry)
    return {"labels": list(labels), "flag_codes": FLAG_CODES, "finding_codes": DATASET_FINDING_CODES,
            "settings": settings(options),
            "alignment": {key: value for key, value in summary.items() if key != "findings"},
            "dataset_findings": summary["findings"], "examples": examples, "counts": flag_counts(examples)}



def flag_counts(examples) -> dict[str, int]:
    """How many examples carry each flag code."""
    counts = {code: 0 for code in FLAG_CODES}
    for entry in examples:
        for code in {flag.split(":")[0] for flag in entry["flags"]}:
            counts[code] += 1
    return counts



def data_key(data_dir, files: dict, options: dict) -> str:
    """Digest of the data files (`files.dataset_files`: image, mask and ROI; names, sizes, modification times),
    dataset.json and the audit's settings."""
    parts = [json.dumps(settings(options), sort_keys=True)]
    description_file = Path(data_dir) / DESCRIPTION_FILE
    if description_file.is_file():
        parts.append(description_file.read_text())
    for name, paths in files.items():
        for path in paths:
            stat = Path(path).stat()
            parts.append(f"{name}\t{Path(path).name}\t{stat.st_size}\t{stat.st_mtime_ns}")
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()


def current_report(path, data_dir, options: dict | None = None) -> dict | None:
    """The report saved at path if it was made from the data now under data_dir with today's settings (and the
    same options as `audit_dataset`'s), else None: the review UI reuses it instead of auditing again. Lists and
    stats the files, reads none of them."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    options = read_declared(data_dir)["audit"] if options is None else options
    key = data_key(data_dir, dataset_files(data_dir), dict(options))
    return report if isinstance(report, dict) and report.get("key") == key else None



def flagged(report, code: str | None = None) -> list[str]:
    """Names of the examples with any flag (or with a flag of the given code)."""
    return [entry["name"] for entry in report["examples"]
            if any(code is None or flag.split(":")[0] == code for flag in entry["flags"])]



def write_report(report, path) -> Path:
    """Write the report as indented JSON (parent folders created)."""
    return write_json(path, report, indent=1)



def format_summary(report) -> str:
    """A readable summary: dataset findings, counts per flag code, then one line per flagged example."""
    examples = report["examples"]
    lines = [f"{report.get('data_dir', 'dataset')}: {len(examples)} pairs, {len(flagged(report))} with flags"]
    lines += [f"  dataset: {finding['code']} {finding.get('shift', '')} -- {finding['detail']}"
              for finding in report["dataset_findings"]]
    lines += [f"  {code:<14}{count:>4}" for code, count in report["counts"].items()]
    lines += [f"  {entry['name']:>8}: {', '.join(entry['flags'])}" for entry in examples if entry["flags"]]
    return "\n".join(lines)
