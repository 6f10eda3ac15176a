"""The audit: content flags, duplicates, the domain checks a description turns on, the report's key, and the
alignment check judged on planted misplacements: in the example data and in realistic synthetic datasets."""
import functools
import json
import os
import shutil
import subprocess
import threading
import time

import audit_synthetic as syn
import numpy as np
import pytest
from conftest import CLI, PROJECT_DIR
from PIL import Image
from synthetic import write_dataset, write_dataset_json, write_layout

from maskpair import audit, jsonio
from maskpair.audit import alignment, domain
from maskpair.audit import dataset as audit_dataset_module
from maskpair.audit import sheet as audit_sheet
from maskpair.data.loader import DataLoader
from maskpair.errors import DataError

SPINE = ("background", "disc", "vertebra")
SPINE_CHECKS = {"alternating": ["disc", "vertebra"], "extent": True}
PLANT_TRIALS = 10
EXAMPLE_DRAWS = 6


@pytest.fixture(scope="module")
def real(example_data):
    """(names, images, masks, edge maps, report) of the 20 real pairs; the report from audit_dataset, which reads
    the example's dataset.json (its audit switches turn the spine checks on)."""
    data = DataLoader(example_data, batch_size=1, cache=False, progress=False)
    images, masks = zip(*(data.raw_pair(name) for name in data.names))
    edges = [alignment.oriented_edges(image) for image in images]
    return data.names, list(images), list(masks), edges, audit.audit_dataset(example_data)


def flags_of(report):
    return {entry["name"]: entry["flags"] for entry in report["examples"]}


def misaligned(report):
    return {name for name, flags in flags_of(report).items() if any(f.startswith("misaligned:") for f in flags)}


# ---------------------------------------------------------------- the real data


def test_real_data_findings(real):
    report = real[-1]
    assert audit.flagged(report, "empty_mask") == ["0", "5", "10"]
    assert audit.flagged(report, "missing_class") == ["1", "13"]
    assert all("missing_class:vertebra" in flags_of(report)[n] for n in ("1", "13"))
    assert flags_of(report)["5"] == ["empty_mask", "duplicate_of:0"]
    # labels that start well below the top, where most masks label the spine up to the frame's edge
    assert audit.flagged(report, "short_column") == ["1", "4", "11", "13", "17"]
    assert all("short_column:top" in flags_of(report)[n] for n in ("1", "4", "11", "13", "17"))
    assert "order_gap:vertebra-vertebra@bottom" in flags_of(report)["4"]
    assert audit.flagged(report, "order_gap") == ["1", "4"]
    assert not misaligned(report) and report["dataset_findings"] == []
    assert report["alignment"]["offset"] == [0, 0]


def test_every_flag_uses_the_vocabulary(real):
    codes = {flag.split(":")[0] for flags in flags_of(real[-1]).values() for flag in flags}
    assert codes and codes <= set(audit.FLAG_CODES)


def test_measures_per_class(real):
    entry = next(e for e in real[-1]["examples"] if e["name"] == "2")
    assert entry["classes"]["disc"]["components"] == 7
    assert entry["classes"]["vertebra"]["components"] == 8
    assert entry["order"]["sequence"] == "VDVDVDVDVDVDVDV"
    assert entry["alignment"]["gain"] < real[-1]["alignment"]["gain_threshold"] and not entry["flags"]


def test_domain_checks_only_when_the_description_asks(real):
    names, images, masks, edges, _ = real
    plain = audit.audit_arrays(names, images, masks, SPINE, edges=edges)
    codes = {flag.split(":")[0] for flags in flags_of(plain).values() for flag in flags}
    assert codes == {"empty_mask", "missing_class", "duplicate_of"}
    assert not any("order" in entry for entry in plain["examples"])


def test_audit_of_twenty_pairs_is_fast(example_data):
    start = time.perf_counter()
    audit.audit_dataset(example_data)
    assert time.perf_counter() - start < 10


# ---------------------------------------------------------------- planted misplacements in the real data


def plant_shift(mask, dy, dx, mode):
    """Move a mask by (dy, dx) with np.roll (wrapping) or with zero padding."""
    return np.roll(mask, (dy, dx), axis=(0, 1)) if mode == "roll" else syn.moved(mask, dy, dx, 0)


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


def test_planted_defects_are_found(real):
    """Measured: 40 of 40 planted defects flagged, no false alarm among the 130 untouched labelled pairs."""
    names, images, masks, edges, _ = real
    labelled = [i for i, mask in enumerate(masks) if mask.any()]
    detected = planted = alarms = untouched = worst = 0
    for seed in range(PLANT_TRIALS):
        planted_masks, defects = planted_trial(masks, labelled, seed)
        found = misaligned(audit.audit_arrays(names, images, planted_masks, SPINE, edges=edges))
        detected += sum(names[i] in found for i in defects)
        planted += len(defects)
        trial_alarms = sum(names[i] in found for i in labelled if i not in defects)
        alarms, worst, untouched = alarms + trial_alarms, max(worst, trial_alarms), untouched + len(labelled) - 4
    assert detected / planted >= 0.95, f"{detected}/{planted} planted defects flagged"
    assert worst <= 1, f"{alarms} false alarms among {untouched} untouched pairs"


def test_most_of_many_planted_misplacements_are_found(real):
    """Issue 29's target on the example pairs: at least 95% of planted misplacements found and at most 5% of the
    untouched pairs flagged, over seeded draws that each plant 8 among the 17 labelled pairs (two shifts of 3-8
    px, rolled or padded, two left-right flips, two swaps: syn.plant_misplacements), so that the median pair is
    nearly a misplaced one. Measured (the 6 draws here): see docs/audit.md."""
    _, images, masks, edges, _ = real
    alarms, untouched, detected, planted = alarm_and_recall(images, masks, np.arange(len(masks)), SPINE,
                                                            EXAMPLE_DRAWS, count=6, edges=edges)
    assert detected >= 0.95 * planted, f"{detected} of {planted} planted misplacements flagged"
    assert alarms <= 0.05 * untouched, f"{alarms} false alarms among {untouched} untouched pairs"


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
    assert expected in flags_of(audit.audit_arrays(names, images, masks, SPINE, edges=edges))["7"]


def test_swapped_masks_name_each_other(real):
    names, images, masks, edges, _ = real
    masks = list(masks)
    masks[3], masks[12] = masks[12], masks[3]
    flags = flags_of(audit.audit_arrays(names, images, masks, SPINE, edges=edges))
    assert "misaligned:swapped_with:12" in flags["3"] and "misaligned:swapped_with:3" in flags["12"]


def test_a_dataset_wide_offset_is_one_finding_not_a_flag_per_pair(real):
    names, images, masks, edges, _ = real
    moved = [syn.moved(mask, -2, 1, 0) for mask in masks]  # every mask 2 px up and 1 px right
    moved[9] = syn.moved(masks[9], 4, 1, 0)                # ... but this one 6 px further down
    report = audit.audit_arrays(names, images, moved, SPINE, edges=edges)
    assert [(f["code"], f["shift"]) for f in report["dataset_findings"]] == [("dataset_offset", [2, -1])]
    assert misaligned(report) == {"9"}


# ---------------------------------------------------------------- realistic synthetic datasets


GENERATED = {  # name -> (images, masks, sequence ids, class names) of each generated dataset (audit_synthetic)
    "street": lambda: (*syn.street_scenes(60), syn.STREET_CLASSES),
    "em": lambda: (*syn.em_slices(40), syn.EM_CLASSES),
    "blobs": lambda: (*syn.blob_frames(40), syn.BLOB_CLASSES),
    "lesion": lambda: (*syn.lesion_images(24), syn.LESION_CLASSES),
    "polyp": lambda: (*syn.polyp_frames(30), syn.POLYP_CLASSES),
    "retina": lambda: (*syn.retina_images(16), syn.RETINA_CLASSES),
}
RECALL = {"street": 0.9, "em": 0.9, "blobs": 0.9, "retina": 0.9}  # lesion, polyp: see the test's docstring


@functools.cache
def generated(name: str):
    """GENERATED[name](), made once per test session."""
    return GENERATED[name]()


def alarm_and_recall(images, masks, sequence, classes, trials: int, count: int | None = None, edges=None,
                     seed: int = 0):
    """(false alarms, untouched labelled pairs, detected, planted) over seeded trials of plant_misplacements,
    each planting count (default: a tenth of the pairs, at least 3)."""
    names = [str(k) for k in range(len(images))]
    edges = [alignment.oriented_edges(image) for image in images] if edges is None else edges
    labelled = [k for k, mask in enumerate(masks) if ((mask != 0) & (mask != syn.IGNORE)).any()]
    alarms = untouched = detected = planted = 0
    for trial in range(trials):
        rng = np.random.default_rng([seed, trial])
        trial_masks, defects = syn.plant_misplacements(masks, sequence, rng, count or max(3, len(masks) // 10))
        found = {int(name) for name in misaligned(audit.audit_arrays(names, images, trial_masks, classes,
                                                                     edges=edges))}
        detected, planted = detected + len(found & set(defects)), planted + len(defects)
        alarms, untouched = alarms + len(found - set(defects)), untouched + len(labelled) - len(defects)
    return alarms, untouched, detected, planted


@pytest.mark.slow
@pytest.mark.parametrize("dataset", GENERATED)
def test_false_alarms_and_recall_on_realistic_data(dataset):
    """Issues 20 and 30's targets: at most 5% of untouched pairs flagged on every kind, at least 90% of planted
    misplacements found where the image shows the outlines. Lesions and polyps have no recall target: their
    borders are soft and often faint (as in the public sets they imitate), and a misplaced outline the image
    does not show cannot be told from a right one; they are here for the false alarms (the issue's dermoscopy
    set had 4 of 16 untouched pairs flagged). Measured: see docs/audit.md."""
    alarms, untouched, detected, planted = alarm_and_recall(*generated(dataset), trials=3)
    assert alarms <= 0.05 * untouched, f"{dataset}: {alarms} false alarms among {untouched} untouched pairs"
    assert detected >= RECALL.get(dataset, 0) * planted, f"{dataset}: {detected} of {planted} planted flagged"


@pytest.mark.slow
def test_faint_outlines_are_not_flagged_by_chance():
    """Spots the image barely shows: the best of hundreds of placements beats the given one by chance unless the
    alternative must also win by EVIDENCE standard errors. Measured: 2 false alarms among 156 untouched pairs;
    16 of 24 planted misplacements found (where the spot is invisible, so is a misplaced one)."""
    images, masks, sequence = syn.faint_spots(60)
    alarms, untouched, detected, planted = alarm_and_recall(images, masks, sequence, ("background", "spot"), 3)
    assert alarms <= 0.05 * untouched and detected >= 0.5 * planted


@pytest.mark.slow
def test_large_photographs_are_judged_reduced_and_in_time(tmp_path):
    """Issue 30: a dataset of 16 pairs of 2592x1936 audited in under two minutes on 2 cores (measured by
    `bench/bench_audit.py --large`); here 4 such pairs as files (JPEG, 0/255 PNG masks), in a quarter of that.
    They are judged reduced by 3 (alignment.reduced), shifts reported in their own pixels; one mask flipped."""
    images, masks, _ = syn.lesion_images(4, shapes=((1936, 2592),), seed=3)
    masks[3] = masks[3][:, ::-1]
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    for k, (image, mask) in enumerate(zip(images, masks)):
        Image.fromarray(image).save(tmp_path / "images" / f"ISIC_{k}.jpg", quality=90)
        Image.fromarray((mask * 255).astype(np.uint8)).save(tmp_path / "masks" / f"ISIC_{k}.png")
    write_dataset_json(tmp_path, name="lesions", channel_names={"0": "R", "1": "G", "2": "B"},
                       labels={"skin": 0, "lesion": 255})
    start = time.perf_counter()
    report = audit.audit_dataset(tmp_path)
    assert time.perf_counter() - start < 30
    assert flags_of(report) == {"ISIC_0": [], "ISIC_1": [], "ISIC_2": [], "ISIC_3": ["misaligned:flip_lr"]}
    assert all(v % 3 == 0 for entry in report["examples"] for v in entry["alignment"]["best_shift"])


def test_near_duplicate_frames_and_an_offset_do_not_flag():
    images, masks, _, classes = generated("street")
    report = audit.audit_arrays([str(k) for k in range(len(images))], images, masks, classes)
    assert not misaligned(report)
    assert [(f["code"], f["shift"]) for f in report["dataset_findings"]] == [("dataset_offset", [1, 0])]
    assert not audit.flagged(report, "missing_class")  # street classes come and go from frame to frame


# ---------------------------------------------------------------- content, ignore pixels, any dataset


def test_ignore_pixels_are_no_boundary_and_no_class():
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 1
    mask[:, 6:] = alignment.IGNORE_INDEX
    boundary = alignment.boundary_map(mask)
    assert boundary[:, 6:].sum() == 0 and boundary[3:5, 5].sum() == 0  # no boundary to or on ignore pixels
    assert boundary[3:5, 1:3].sum() == 4  # but both sides of the square's left edge
    only_ignore = np.where(mask == 1, alignment.IGNORE_INDEX, 0).astype(np.uint8)
    images = [np.full((8, 8, 3), k, np.uint8) for k in range(2)]
    report = audit.audit_arrays(["a", "b"], images, [mask, only_ignore], ("bg", "fg"))
    assert report["examples"][0]["classes"]["fg"]["pixels"] == 16
    assert flags_of(report)["b"] == ["empty_mask"]
    assert domain.labelled_rows(only_ignore) is None


def test_missing_class_is_relative_to_the_dataset():
    masks = []
    for k in range(10):  # class 1 and 2 in 9 of 10 masks each, class 3 (a class that comes and goes) in 2
        mask = np.zeros((16, 16), np.uint8)
        mask[2:6, k:k + 4] = 1 if k != 8 else 0
        mask[10:14, k:k + 4] = 2 if k != 9 else 0
        mask[7, k] = 3 if k < 2 else 0
        masks.append(mask)
    images = [np.full((16, 16), k, np.uint8) for k in range(len(masks))]
    flags = flags_of(audit.audit_arrays(list("abcdefghij"), images, masks, ("bg", "one", "two", "three")))
    assert flags["i"] == ["missing_class:one"] and flags["j"] == ["missing_class:two"]
    assert not any(flags[name] for name in "abcdefgh")


def test_duplicates(tmp_path):
    root = write_dataset(tmp_path / "d", ["a", "b", "c"], shape=(32, 32))
    (root / "images" / "c.png").write_bytes((root / "images" / "a.png").read_bytes())
    report = audit.audit_dataset(root)
    assert "duplicate_of:a" in flags_of(report)["c"] and report["examples"][2]["duplicate"] == {"image": "a"}


@pytest.mark.parametrize("layout", ["em", "rgb_ignore", "mixed_sizes"])
def test_any_dataset_layout_is_audited(tmp_path, layout):
    root = write_layout(tmp_path / layout, layout, n=8)
    report = audit.audit_dataset(root)
    assert report["labels"] == list(DataLoader(root, cache=False).labels)
    assert {flag.split(":")[0] for flags in flags_of(report).values() for flag in flags} <= \
        {"empty_mask", "missing_class", "duplicate_of", "misaligned"}  # no domain checks without the switches
    assert "vertebra" not in jsonio.dumps(report["examples"])


# ---------------------------------------------------------------- domain checks (spine-like structure)


def column_mask(sequence, shape=(120, 64)):
    """A mask with one horizontal band per letter (D disc, V vertebra), stacked top to bottom."""
    mask = np.zeros(shape, np.uint8)
    for k, letter in enumerate(sequence):
        mask[10 + 12 * k:18 + 12 * k, 20:44] = 1 if letter == "D" else 2
    return mask


def test_order_gaps_found_at_the_right_end():
    column = domain.levels(column_mask("VDVDVVDV"), SPINE, ("disc", "vertebra"))
    assert "".join(level["label"][0].upper() for level in column) == "VDVDVVDV"
    assert domain.order_gaps(column) == ["order_gap:vertebra-vertebra@bottom"]
    assert domain.order_gaps(domain.levels(column_mask("DDVDV"), SPINE, ("disc", "vertebra"))) == \
        ["order_gap:disc-disc@top"]


def test_order_classes_come_from_the_description():
    mask = column_mask("VVDDV")
    image = (mask * 100).astype(np.uint8)
    report = audit.audit_arrays(["a"], [image], [mask], ("bg", "gap", "block"),
                                options={"alternating": ["gap", "block"]})
    assert "order_gap:block-block@top" in report["examples"][0]["flags"]


def test_audit_switches_are_checked(tmp_path):
    root = write_dataset(tmp_path / "d", ["a", "b"])
    write_dataset_json(root, name="d", channel_names={"0": "gray"}, labels={"bg": 0, "disc": 1, "bone": 2},
                       audit={"alternating": ["disc", "vertebra"], "colour": True})
    with pytest.raises(DataError) as caught:
        audit.audit_dataset(root)
    assert len(caught.value.problems) == 2 and all("dataset.json: audit" in line for line in caught.value.problems)


def test_short_columns_are_judged_against_the_datasets_median_extent():
    full = column_mask("VDVDVDVDV")  # labelled rows 10-113 of 120
    stops_short = full.copy()
    stops_short[:40] = 0  # the top levels left unlabelled
    lifted = np.zeros_like(full)
    lifted[:-40] = full[40:]  # the same column, ending 40 rows above the usual bottom
    masks = [full] * 5 + [stops_short, lifted, np.zeros_like(full)]
    margins = [domain.edge_margins(mask) for mask in masks]
    assert domain.short_column_flags(margins) == [[]] * 5 + [["short_column:top"], ["short_column:bottom"], []]
    assert domain.short_column_flags(margins[:2] + margins[5:]) == [[]] * 5  # too few to know what is usual
    assert domain.edge_margins(stops_short) == (40 / 120, 6 / 120)
    images = [(mask * 100).astype(np.uint8) for mask in masks]
    flags = flags_of(audit.audit_arrays(list("abcdefgh"), images, masks, SPINE, options={"extent": True}))
    assert flags["f"] == ["short_column:top"]


# ---------------------------------------------------------------- report key, reuse, progress


def test_current_report_is_reused_until_the_data_or_settings_change(tmp_path, monkeypatch):
    root = write_dataset(tmp_path / "d", [str(k) for k in range(4)])
    path = audit.write_report(audit.audit_dataset(root), tmp_path / "audit.json")
    assert audit.current_report(path, root)["key"] == json.loads(path.read_text())["key"]
    assert audit.current_report(path, root, options={"extent": True}) is None
    monkeypatch.setattr(alignment, "MIN_GAIN", alignment.MIN_GAIN + 0.01)
    assert audit.current_report(path, root) is None
    monkeypatch.undo()
    mask = root / "masks" / "2.npy"
    os.utime(mask, ns=(mask.stat().st_atime_ns, mask.stat().st_mtime_ns + 1_000_000))
    assert audit.current_report(path, root) is None
    assert audit.current_report(tmp_path / "missing.json", root) is None


def test_progress_is_reported(tmp_path):
    root = write_dataset(tmp_path / "d", [str(k) for k in range(5)])
    calls = []
    audit.audit_dataset(root, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(k, 5) for k in range(1, 6)]


def test_worker_processes_give_the_same_report(tmp_path, monkeypatch):
    """Forked workers from the main thread (the CLI), a fork server's from another thread (the review UI)."""
    monkeypatch.setattr(audit_dataset_module, "POOL_FROM", 6)  # worker processes from 6 pairs on (64 by default)
    names = [str(k) for k in range(40)]
    root = write_dataset(tmp_path / "d", names, shape=(48, 48))
    calls, reports = [], {}
    reports["fork"] = audit.audit_dataset(root, progress=lambda done, total: calls.append(done))
    thread = threading.Thread(target=lambda: reports.update(forkserver=audit.audit_dataset(root, progress=False)))
    thread.start()
    thread.join(120)
    data = DataLoader(root, cache=False)
    in_process = audit.audit_arrays(names, *zip(*map(data.raw_pair, names)), data.labels)
    assert reports["fork"]["examples"] == reports["forkserver"]["examples"] == in_process["examples"]
    assert calls[-1] == len(names)


def test_unreadable_pairs_are_listed_together(tmp_path):
    root = write_dataset(tmp_path / "d", [str(k) for k in range(4)])
    for name in ("1", "3"):
        (root / "masks" / f"{name}.npy").write_bytes(b"\x93NUMPY not really")
    with pytest.raises(DataError) as caught:
        audit.audit_dataset(root)
    assert [line.split(":")[0] for line in caught.value.problems] == ["masks/1.npy", "masks/3.npy"]


# ---------------------------------------------------------------- command line and contact sheet


def run_cli(*args):
    return subprocess.run([*CLI, "audit", *map(str, args)],
                          check=False, capture_output=True, text=True, timeout=120)


def test_cli_from_a_users_folder_writes_report_sheet_and_findings(example_data, tmp_path):
    """`maskpair audit DATA --json OUT/audit.json` run from a user's folder that holds its own config.py,
    errors.py, model.py and utils.py (each refuses to be imported), on a copy of the example data with mask 7
    moved 6 px right: exit 0, and the written report names the misplaced pair. In memory its `misaligned` is a
    numpy bool (`np.float64(1) > 0.5`): the report that crashed the audit before the one JSON writer."""
    data = shutil.copytree(example_data, tmp_path / "spine")
    np.save(data / "masks" / "7.npy", syn.moved(np.load(data / "masks" / "7.npy"), 0, 6, 0))
    user = tmp_path / "user"
    user.mkdir()
    for name in ("config.py", "errors.py", "model.py", "utils.py"):
        (user / name).write_text(f"raise ImportError('the user\\'s own {name} was imported')\n")
    out = tmp_path / "out" / "audit.json"
    result = subprocess.run([*CLI, "audit", data, "--json", out], cwd=user, check=False, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)})
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert [e["name"] for e in report["examples"]] == [str(k) for k in range(20)]
    entry = report["examples"][7]
    assert "misaligned:shift(0,-6)" in entry["flags"] and entry["alignment"]["misaligned"] is True
    assert misaligned(report) == {"7"} and report["counts"]["misaligned"] == 1
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert "7: misaligned:shift(0,-6)" in result.stdout and "13: missing_class:vertebra" in result.stdout
    assert audit.current_report(out, data) is not None
    assert isinstance(audit.audit_dataset(data)["examples"][7]["alignment"]["misaligned"], np.bool_)


def test_cli_bad_input_is_one_line_per_problem_without_traceback(tmp_path):
    root = write_dataset(tmp_path / "d", ["a", "b"])
    (root / "masks" / "b.npy").write_bytes(b"not a numpy file")
    result = run_cli(root, "--json", tmp_path / "r.json")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "masks/b.npy" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_contact_sheet_shows_flagged_pairs_first(tmp_path):
    root = write_layout(tmp_path / "street", "rgb_ignore", n=12)
    report = audit.audit_dataset(root)
    for entry in report["examples"]:
        entry["flags"] = ["misaligned:flip_lr"] if entry["name"] == "7" else []
    path = audit.contact_sheet(report, root, tmp_path / "sheet.png", columns=4, max_examples=5, thumb=64)
    from PIL import Image

    with Image.open(path) as sheet:
        assert sheet.size == (4 * 64, 2 * (64 + audit_sheet.CAPTION_HEIGHT))
    assert audit_sheet.sheet_order(report, 5)[0] == "7"
