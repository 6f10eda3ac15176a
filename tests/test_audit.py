"""audit.py: content flags, duplicates, anatomical order, and alignment found on planted defects."""
import json
import subprocess
import sys
import time

import numpy as np
import pytest

import audit
import loader
from synthetic import write_array, write_dataset

PLANT_TRIALS = 10


@pytest.fixture(scope="module")
def real(example_data):
    """(names, images, masks, edge maps, report) of the 20 real pairs, audited once."""
    names, images, masks = audit.read_dataset(example_data)
    edges = [audit.edge_map(image) for image in images]
    return names, images, masks, edges, audit.audit_arrays(names, images, masks, edges=edges)


def flags_of(report):
    return {entry["name"]: entry["flags"] for entry in report["examples"]}


def misaligned(report):
    return {name for name, flags in flags_of(report).items() if any(f.startswith("misaligned:") for f in flags)}


# ---------------------------------------------------------------- the real data


def test_real_data_findings(real):
    report = real[-1]
    assert audit.flagged(report, "empty_mask") == ["0", "5", "10"]
    assert audit.flagged(report, "missing_class") == ["1", "13"]
    assert all(flags_of(report)[n] == ["missing_class:vertebra"] or "missing_class:vertebra" in flags_of(report)[n]
               for n in ("1", "13"))
    assert len(misaligned(report)) <= 1
    assert flags_of(report)["5"] == ["empty_mask", "duplicate_of:0"]
    # labels that start well below the top, where most masks label the spine up to the frame's edge
    assert audit.flagged(report, "short_column") == ["1", "4", "11", "13", "17"]
    assert all("short_column:top" in flags_of(report)[n] for n in ("1", "4", "11", "13", "17"))


def test_every_flag_uses_the_vocabulary(real):
    codes = {flag.split(":")[0] for flags in flags_of(real[-1]).values() for flag in flags}
    assert codes and codes <= set(audit.FLAG_CODES)


def test_measures_per_class(real):
    entry = flags = next(e for e in real[-1]["examples"] if e["name"] == "2")
    assert entry["classes"]["disc"]["components"] == 7
    assert entry["classes"]["vertebra"]["components"] == 8
    assert entry["order"]["sequence"] == "VDVDVDVDVDVDVDV"
    assert entry["alignment"]["margin"] > audit.MARGIN and not flags["flags"]


def test_audit_of_twenty_pairs_is_fast(example_data):
    start = time.perf_counter()
    audit.audit_dataset(example_data)
    assert time.perf_counter() - start < 10


# ---------------------------------------------------------------- planted defects


def plant_shift(mask, dy, dx, mode):
    """Move a mask by (dy, dx) with np.roll (wrapping) or with zero padding."""
    if mode == "roll":
        return np.roll(mask, (dy, dx), axis=(0, 1))
    out = np.zeros_like(mask)
    h, w = mask.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = mask[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def random_shift(rng):
    """(dy, dx) with each component in -8..8 and the larger one at least 3."""
    while True:
        dy, dx = (int(v) for v in rng.integers(-8, 9, 2))
        if max(abs(dy), abs(dx)) >= 3:
            return dy, dx


def planted_trial(masks, labelled, seed):
    """Masks with one shift, one flip and one swap planted at random; returns (masks, {index: defect})."""
    rng = np.random.default_rng(seed)
    shift_at, flip_at, swap_a, swap_b = (int(i) for i in rng.choice(labelled, 4, replace=False))
    masks = list(masks)
    shift = random_shift(rng)
    masks[shift_at] = plant_shift(masks[shift_at], *shift, rng.choice(["roll", "pad"]))
    masks[flip_at] = masks[flip_at][:, ::-1] if rng.random() < 0.5 else masks[flip_at][::-1]
    masks[swap_a], masks[swap_b] = masks[swap_b], masks[swap_a]
    return masks, {shift_at: f"shift{shift}", flip_at: "flip", swap_a: "swap", swap_b: "swap"}


def planted_rates(names, images, masks, edges, trials):
    """(detected, planted, false alarms, untouched labelled pairs) over seeded planted-defect trials."""
    labelled = [i for i, mask in enumerate(masks) if mask.any()]
    detected = planted = alarms = untouched = 0
    worst_alarms = 0
    for seed in range(trials):
        planted_masks, defects = planted_trial(masks, labelled, seed)
        found = misaligned(audit.audit_arrays(names, images, planted_masks, edges=edges))
        detected += sum(names[i] in found for i in defects)
        planted += len(defects)
        trial_alarms = sum(names[i] in found for i in labelled if i not in defects)
        alarms += trial_alarms
        worst_alarms = max(worst_alarms, trial_alarms)
        untouched += len(labelled) - len(defects)
    return detected, planted, alarms, untouched, worst_alarms


def test_planted_defects_are_found(real):
    names, images, masks, edges, _ = real
    detected, planted, alarms, untouched, worst = planted_rates(names, images, masks, edges, PLANT_TRIALS)
    assert detected / planted >= 0.95, f"{detected}/{planted} planted defects flagged"
    assert worst <= 1, f"{alarms} false alarms among {untouched} untouched pairs"


@pytest.mark.parametrize("defect, expected", [
    (lambda m: m[:, ::-1], "misaligned:flip_lr"),
    (lambda m: m[::-1], "misaligned:flip_ud"),
    (lambda m: m.T, "misaligned:transpose"),
    (lambda m: plant_shift(m, 0, 6, "pad"), "misaligned:shift(0,-6)"),
])
def test_planted_defect_is_named(real, defect, expected):
    names, images, masks, edges, _ = real
    masks = list(masks)
    masks[7] = defect(masks[7])
    flags = flags_of(audit.audit_arrays(names, images, masks, edges=edges))
    assert expected in flags["7"]


def test_swapped_masks_name_each_other(real):
    names, images, masks, edges, _ = real
    masks = list(masks)
    masks[3], masks[12] = masks[12], masks[3]
    flags = flags_of(audit.audit_arrays(names, images, masks, edges=edges))
    assert "misaligned:swapped_with:12" in flags["3"] and "misaligned:swapped_with:3" in flags["12"]


# ---------------------------------------------------------------- synthetic structure


def column_mask(sequence, shape=(120, 64)):
    """A mask with one horizontal band per letter (D disc, V vertebra), stacked top to bottom."""
    mask = np.zeros(shape, np.uint8)
    for k, letter in enumerate(sequence):
        mask[10 + 12 * k:18 + 12 * k, 20:44] = 1 if letter == "D" else 2
    return mask


def test_order_gaps_found_at_the_right_end():
    column = audit.levels(column_mask("VDVDVVDV"), loader.LABELS)
    assert "".join(level["label"][0].upper() for level in column) == "VDVDVVDV"
    assert audit.order_gaps(column) == ["order_gap:vertebra-vertebra@bottom"]
    assert audit.order_gaps(audit.levels(column_mask("DDVDV"), loader.LABELS)) == ["order_gap:disc-disc@top"]


def test_short_columns_are_judged_against_the_datasets_median_extent():
    full = column_mask("VDVDVDVDV")  # labelled rows 10-113 of 120
    stops_short = full.copy()
    stops_short[:40] = 0  # the top levels left unlabelled
    lifted = np.zeros_like(full)
    lifted[:-40] = full[40:]  # the same column, ending 40 rows above the usual bottom
    masks = [full] * 5 + [stops_short, lifted, np.zeros_like(full)]
    assert audit.short_columns(masks) == [[]] * 5 + [["short_column:top"], ["short_column:bottom"], []]
    assert audit.short_columns(masks[:2] + masks[5:]) == [[]] * 5  # too few labelled masks to know what is usual
    assert audit.edge_margins(stops_short) == (40 / 120, 6 / 120)


def test_order_check_can_be_switched_off():
    mask = column_mask("VVDDV")
    image = (mask * 100).astype(np.uint8)
    on = audit.audit_arrays(["a"], [image], [mask])
    off = audit.audit_arrays(["a"], [image], [mask], anatomical=False)
    assert any(f.startswith("order_gap:") for f in on["examples"][0]["flags"])
    assert not any(f.startswith("order_gap:") for f in off["examples"][0]["flags"]) and "order" not in off["examples"][0]
    masks = [column_mask("VDVDV")] * 5 + [column_mask("VDVDV")[::-1]]  # the last labels only the lower half
    images = [(mask * 100).astype(np.uint8) for mask in masks]
    assert "short_column:top" in audit.audit_arrays(list("abcdef"), images, masks)["examples"][-1]["flags"]
    off = audit.audit_arrays(list("abcdef"), images, masks, anatomical=False)["examples"][-1]["flags"]
    assert not any(flag.startswith("short_column:") for flag in off)


def test_duplicates_and_missing_classes(tmp_path):
    root = write_dataset(tmp_path / "d", ["a", "b", "c"], shape=(32, 32))
    (root / "images" / "c.png").write_bytes((root / "images" / "a.png").read_bytes())
    write_array(root / "masks" / "b.npy", np.where(np.load(root / "masks" / "b.npy") == 2, 0, 1))
    report = audit.audit_dataset(root, anatomical_order=False)
    flags = flags_of(report)
    assert "duplicate_of:a" in flags["c"] and report["examples"][2]["duplicate"] == {"image": "a"}
    assert flags["b"][:1] == ["missing_class:vertebra"]


def test_progress_is_reported(tmp_path):
    root = write_dataset(tmp_path / "d", [str(k) for k in range(5)])
    calls = []
    audit.audit_dataset(root, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(k, 5) for k in range(1, 6)]


# ---------------------------------------------------------------- command line


def run_cli(*args):
    return subprocess.run([sys.executable, str(audit.loader.PROJECT_DIR / "audit.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_report_sheet_and_summary(example_data, tmp_path):
    result = run_cli(example_data, "--json", tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert [e["name"] for e in report["examples"]] == [str(k) for k in range(20)]
    assert (tmp_path / "r.png").stat().st_size > 10_000
    assert "empty_mask" in result.stdout and "13: missing_class:vertebra" in result.stdout


def test_cli_bad_input_is_one_line_without_traceback(tmp_path):
    root = write_dataset(tmp_path / "d", ["a", "b"])
    (root / "masks" / "b.npy").write_bytes(b"not a numpy file")
    result = run_cli(root, "--json", tmp_path / "r.json")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "masks/b.npy" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
