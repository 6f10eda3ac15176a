"""Audit wall time and peak memory at scale (the audit and the contact sheet, each in its own subprocess), and
the alignment check's false alarms and recall on realistic generated datasets of real sizes.

    python bench/bench_audit.py               # 2,000 generated 256x256 pairs
    python bench/bench_audit.py --pairs 200   # a quicker look
    python bench/bench_audit.py --quality     # false alarms / recall, planted misplacements (~15 minutes)
    python bench/bench_audit.py --quality lesion,polyp   # some of the datasets only
    python bench/bench_audit.py --large       # 16 generated 2592x1936 dermoscopy-like pairs, JPEG + PNG
    python bench/bench_audit.py --before 47826e5   # also the audit as it was at that commit, side by side

The pairs are seeded flips, shifts and brightness changes of the 20 example pairs (fetched into data/spine-mri
if missing), with a dataset.json that turns the spine checks on, written once under
~/.cache/maskpair-bench/audit-N and reused. Memory is sampled every 50 ms over the measuring process and its
worker processes: "peak anon MB" is the largest sum of their Pss_Anon (what they really hold: mapped file pages
do not count, and pages a forked worker still shares with its parent count once), "peak RSS MB" the measuring
process's own VmHWM; "CPU s" is their user + system time, which a busy machine inflates less than wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
import numpy as np
import psutil

from maskpair import audit
from maskpair.audit import alignment
from maskpair.data.fetch import EXAMPLE_DATA_DIR, fetch_example_data
from maskpair.data.loader import DataLoader

CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "maskpair-bench"
SPINE_DESCRIPTION = {"name": "spine MRI (generated for the audit benchmark)", "channel_names": {"0": "T2"},
                     "labels": {"background": 0, "disc": 1, "vertebra": 2},
                     "audit": {"alternating": ["disc", "vertebra"], "extent": True}}
MB = 2**20
BEFORE_FILES = ("audit.py", "loader.py", "errors.py")  # the audit and what it imported, before issues 20-21


def generate_dataset(templates: Path, dest: Path, n_pairs: int, seed: int = 0) -> Path:
    """Write n_pairs seeded flips/shifts/brightness changes of the template pairs (PNG + .npy); reuse if done."""
    if (dest / ".complete").is_file():
        return dest
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image


    data = DataLoader(templates, batch_size=1, cache=False, progress=False)
    pairs = [(image[..., 0], mask) for image, mask in map(data.raw_pair, data.names)]  # gray; values 0, 1, 2
    for kind in ("images", "masks"):
        (dest / kind).mkdir(parents=True, exist_ok=True)

    def write(k):
        rng = np.random.default_rng([seed, k])
        image, mask = pairs[k % len(pairs)]
        shift = tuple(int(v) for v in rng.integers(-16, 17, size=2))
        flip = np.fliplr if rng.random() < 0.5 else np.asarray
        bright = np.clip(flip(image) * rng.uniform(0.8, 1.2) + rng.normal(0, 2, image.shape), 0, 255)
        Image.fromarray(np.roll(bright.astype(np.uint8), shift, (0, 1))).save(dest / "images" / f"{k}.png")
        np.save(dest / "masks" / f"{k}.npy", np.roll(flip(mask), shift, (0, 1)).astype(np.uint8))

    with ThreadPoolExecutor(os.cpu_count()) as pool:  # PNG compression releases the GIL
        list(pool.map(write, range(n_pairs)))
    (dest / "dataset.json").write_text(json.dumps(SPINE_DESCRIPTION, indent=1) + "\n")
    (dest / ".complete").touch()
    return dest


def pss_anon(pid: int) -> int:
    """Anonymous memory of a process in bytes, pages shared with other processes (a forked worker's copy of its
    parent) divided among them: Pss_Anon (0 if the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss_Anon:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def own_peak_rss() -> int:
    """This process's VmHWM in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


class TreeMonitor:
    """Samples this process and its descendants (the audit's worker processes) every 50 ms: .peak_anon is the
    largest sum of their Pss_Anon, .cpu_seconds the CPU time (user + system) they used, each process's last
    sample counted."""

    def __init__(self):
        self.peak_anon, self._cpu, self._stop = 0, {}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            tree = [me, *me.children(recursive=True)]
            self.peak_anon = max(self.peak_anon, sum(pss_anon(process.pid) for process in tree))
            for process in tree:
                try:
                    times = process.cpu_times()
                    self._cpu[process.pid] = times.user + times.system
                except psutil.Error:  # ended between listing and reading
                    pass
            self._stop.wait(0.05)

    @property
    def cpu_seconds(self) -> float:
        return sum(self._cpu.values())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def checkout_before(commit: str, dest: Path) -> Path:
    """The audit and what it imported as they were at commit, written to dest; returns dest: the maskpair
    package (git archive) where the commit has one, else the top-level files it had (BEFORE_FILES)."""
    dest.mkdir(parents=True, exist_ok=True)
    listed = subprocess.run(["git", "ls-tree", "--name-only", commit, "maskpair"], check=True, capture_output=True,
                            text=True, cwd=PROJECT_DIR).stdout.strip()
    if listed:
        archive = subprocess.run(["git", "archive", commit, "maskpair"], check=True, capture_output=True,
                                 cwd=PROJECT_DIR).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        return dest
    for name in BEFORE_FILES:
        shown = subprocess.run(["git", "show", f"{commit}:{name}"], check=True, capture_output=True, text=True,
                               cwd=PROJECT_DIR)
        (dest / name).write_text(shown.stdout)
    return dest


def measure(what: str, data_dir: Path, report_path: Path, code: Path) -> dict:
    """Run the audit (writing report_path) or the contact sheet (from it); seconds and memory figures.
    code: this checkout (the package's audit), or an older one's files (--before: its maskpair package, or
    before there was one, its top-level audit.py)."""
    if (code / "maskpair").is_dir():  # this checkout, or an older one's package first on PYTHONPATH
        from maskpair import audit
    else:
        sys.path.insert(0, str(code))
        import audit

    with TreeMonitor() as monitor:
        start = time.perf_counter()
        if what == "audit":
            report = audit.audit_dataset(data_dir, progress=False)
            audit.write_report(report, report_path)
            detail = {"flagged": len(audit.flagged(report)), "counts": report["counts"],
                      "findings": report.get("dataset_findings")}
        else:
            report = json.loads(report_path.read_text())
            sheet = audit.contact_sheet(report, data_dir, report_path.with_suffix(".png"))
            detail = {"sheet_kb": sheet.stat().st_size // 1024}
        seconds = time.perf_counter() - start
    times = psutil.Process().cpu_times()  # this process's final figure (the monitor's may be 50 ms old)
    monitor._cpu[os.getpid()] = times.user + times.system
    return {"seconds": seconds, "cpu_seconds": monitor.cpu_seconds, "peak_anon_mb": monitor.peak_anon / MB,
            "peak_rss_mb": own_peak_rss() / MB, **detail}


def run_in_subprocess(what: str, data_dir: Path, report_path: Path, code: Path = PROJECT_DIR) -> dict:
    """`measure` in a fresh interpreter that imports audit from code, so one step's memory never counts against
    another's (and an older package is the one this script and the audit's worker processes import)."""
    command = [sys.executable, __file__, "--measure", what, str(data_dir), str(report_path), str(code)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(code), os.environ.get("PYTHONPATH", "")])}
    cwd = code if (code / "maskpair").is_dir() else PROJECT_DIR  # worker processes look in the current folder
    done = subprocess.run(command, check=False, capture_output=True, text=True, cwd=cwd, env=env)
    if done.returncode:
        raise RuntimeError(f"{what} on {data_dir} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


QUALITY_TRIALS = 5
LARGE_PAIRS = 16
LARGE_DESCRIPTION = {"name": "dermoscopy-like lesions (generated for the audit benchmark)",
                     "channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"skin": 0, "lesion": 255}}


def synthetic_module():
    """tests/audit_synthetic.py, the generators of realistic datasets and planted misplacements."""
    sys.path.insert(0, str(PROJECT_DIR / "tests"))
    import audit_synthetic

    return audit_synthetic


def example_pairs():
    """(images, masks, sequence ids, class names) of the 20 example pairs (fetched into data/spine-mri if
    missing)."""
    if not (EXAMPLE_DATA_DIR / "images").is_dir():
        fetch_example_data(EXAMPLE_DATA_DIR)
    data = DataLoader(EXAMPLE_DATA_DIR, batch_size=1, cache=False, progress=False)
    images, masks = zip(*map(data.raw_pair, data.names))
    return list(images), list(masks), np.arange(len(masks)), data.labels


def quality_datasets() -> dict:
    """name -> (make: () -> (images, masks, sequence ids, class names), what it is, pairs planted per trial
    (None: a tenth of the pairs, at least 3), trials), at the sizes of the public sets they imitate."""
    syn = synthetic_module()
    return {
        "spine": (example_pairs, "the 20 example pairs, 8 of the 17 labelled ones misplaced in every trial", 6,
                  4 * QUALITY_TRIALS),
        "street": (lambda: (*syn.street_scenes(367, (360, 480), sequences=4), syn.STREET_CLASSES),
                   "367 RGB 480x360 frames of 4 slow drives, 11 classes + ignore, labels 1 px off (CamVid-like)",
                   None, QUALITY_TRIALS),
        "em": (lambda: (*syn.em_slices(30, (512, 512), cell_size=60, z_step=8), syn.EM_CLASSES),
               "30 gray 512x512 slices of one cell volume, membrane/cell (ISBI-2012-like)", None, QUALITY_TRIALS),
        "blobs": (lambda: (*syn.blob_frames(200, (256, 256)), syn.BLOB_CLASSES),
                  "200 RGB 256x256 smooth label maps, 6 classes, slowly changing, labels 1 px off", None,
                  QUALITY_TRIALS),
        "sloppy": (lambda: (*syn.blob_frames(200, (256, 256), drift=2, jitter=2.5, seed=1), syn.BLOB_CLASSES),
                   "the same with per-pair offsets up to 2 px and 2.5 px outline wander", None, QUALITY_TRIALS),
        "faint": (lambda: (*syn.faint_spots(200, (192, 192)), ("background", "spot")),
                  "200 gray 192x192 noisy images, one faint spot each (often invisible)", None, QUALITY_TRIALS),
        "lesion": (lambda: (*syn.lesion_images(120, seed=1), syn.LESION_CLASSES),
                   ("120 RGB dermoscopy-like photographs 600x450 to 1024x768, one soft, often faint lesion each, "
                    "hair, vignetting (ISIC-like)"), None, QUALITY_TRIALS),
        "polyp": (lambda: (*syn.polyp_frames(120, seed=1), syn.POLYP_CLASSES),
                  ("120 RGB endoscopy-like frames 384x288 to 576x480, one or two soft polyps, a third close up "
                   "filling most of the frame, folds, glints (Kvasir/CVC-like)"), None, QUALITY_TRIALS),
        "retina": (lambda: (*syn.retina_images(40, seed=1), syn.RETINA_CLASSES),
                   "40 RGB fundus-like 565x584, vessels 1-7 px, outside the field of view ignore (DRIVE-like)",
                   None, QUALITY_TRIALS),
    }


def quality(names=None) -> list[str]:
    """Markdown rows: per dataset (all, or those named), untouched pairs flagged (no plants) and over seeded
    trials of planted misplacements (shifts of 3-8 px, left-right flips, swaps between distant examples, a third
    each), the false alarms among the untouched pairs and the planted pairs flagged."""
    syn = synthetic_module()
    rows = ["| data | what | untouched flagged (no plants) | false alarms (planted trials) | recall | s per audit |",
            "|---|---|---:|---:|---:|---:|"]
    for name, (make, what, count, trials) in quality_datasets().items():
        if names and name not in names:
            continue
        images, masks, sequence, classes = make()
        names_ = [str(k) for k in range(len(images))]
        edges = [alignment.oriented_edges(image) for image in images]
        labelled = {k for k, mask in enumerate(masks) if ((mask != 0) & (mask != syn.IGNORE)).any()}
        start = time.perf_counter()
        clean = flagged_misaligned(audit.audit_arrays(names_, images, masks, classes, progress=False, edges=edges))
        seconds = time.perf_counter() - start
        alarms = untouched = detected = planted = 0
        for trial in range(trials):
            rng = np.random.default_rng([7, trial])
            trial_masks, defects = syn.plant_misplacements(masks, sequence, rng, count or max(3, len(masks) // 10))
            found = flagged_misaligned(audit.audit_arrays(names_, images, trial_masks, classes, progress=False,
                                                          edges=edges))
            detected, planted = detected + len(found & set(defects)), planted + len(defects)
            alarms, untouched = alarms + len(found - set(defects)), untouched + len(labelled - set(defects))
        rows.append(f"| {name} | {what} | {len(clean)}/{len(labelled)} | {alarms}/{untouched} "
                    f"({alarms / untouched:.1%}) | {detected}/{planted} ({detected / planted:.0%}) | {seconds:.1f} |")
        print(rows[-1], flush=True)
    return rows


def write_large(dest: Path, n_pairs: int = LARGE_PAIRS, seed: int = 0) -> Path:
    """Write n_pairs dermoscopy-like 2592x1936 pairs (audit_synthetic.lesion_images) as a published set has them:
    images/ISIC_K.jpg (quality 90), masks/ISIC_K.png (0/255), dataset.json; reuse if done."""
    if (dest / ".complete").is_file():
        return dest
    from PIL import Image

    images, masks, _ = synthetic_module().lesion_images(n_pairs, shapes=((1936, 2592),), seed=seed)
    for kind in ("images", "masks"):
        (dest / kind).mkdir(parents=True, exist_ok=True)
    for k, (image, mask) in enumerate(zip(images, masks)):
        Image.fromarray(image).save(dest / "images" / f"ISIC_{k:07d}.jpg", quality=90)
        Image.fromarray((mask * 255).astype(np.uint8)).save(dest / "masks" / f"ISIC_{k:07d}.png")
    (dest / "dataset.json").write_text(json.dumps(LARGE_DESCRIPTION, indent=1) + "\n")
    (dest / ".complete").touch()
    return dest


def large(before: str | None) -> list[str]:
    """Markdown rows: the audit of LARGE_PAIRS untouched 2592x1936 pairs (wall and CPU time, memory, pairs
    flagged misaligned), in a subprocess as for the 2,000 pairs; with before, also at that commit."""
    data_dir = write_large(CACHE_ROOT / f"audit-large-{LARGE_PAIRS}")
    runs = {"now": run_in_subprocess("audit", data_dir, CACHE_ROOT / "audit-large.json")}
    if before:
        code = checkout_before(before, CACHE_ROOT / f"audit-at-{before}")
        runs[f"at {before}"] = run_in_subprocess("audit", data_dir, CACHE_ROOT / f"audit-large-at-{before}.json", code)
    rows = [(f"{LARGE_PAIRS} pairs of 2592x1936 (JPEG + PNG) in {data_dir}, {os.cpu_count()} cores, load average "
             f"{os.getloadavg()[0]:.1f} after"),
            "| audit | wall s | CPU s | peak anon MB | pairs flagged misaligned |", "|---|---:|---:|---:|---:|"]
    rows += [f"| {name} | {run['seconds']:.1f} | {run['cpu_seconds']:.1f} | {run['peak_anon_mb']:.0f} | "
             f"{run['counts'].get('misaligned', 0)} of {LARGE_PAIRS} |" for name, run in runs.items()]
    if before:
        old, new = runs[f"at {before}"], runs["now"]
        rows.append(f"now {old['seconds'] / new['seconds']:.1f}x faster, {old['cpu_seconds'] / new['cpu_seconds']:.1f}x "
                    f"less CPU than at {before}")
    return rows


def flagged_misaligned(report) -> set[int]:
    """Indices (names are str(k)) of the pairs flagged misaligned."""
    return {int(entry["name"]) for entry in report["examples"]
            if any(flag.startswith("misaligned:") for flag in entry["flags"])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2000, help="generated pairs (default 2000)")
    parser.add_argument("--before", metavar="COMMIT", help="also measure the audit as it was at this commit")
    parser.add_argument("--quality", nargs="?", const="", metavar="NAMES",
                        help="false alarms and recall on generated datasets (all, or those named, comma-separated)")
    parser.add_argument("--large", action="store_true", help="the audit of 16 generated 2592x1936 pairs")
    parser.add_argument("--measure", nargs=4, metavar=("WHAT", "DATA_DIR", "REPORT", "CODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quality is not None:
        print("\n".join(quality([name for name in args.quality.split(",") if name])))
        return 0
    if args.large:
        print("\n".join(large(args.before)))
        return 0
    if args.measure:
        print(json.dumps(measure(args.measure[0], Path(args.measure[1]), Path(args.measure[2]), Path(args.measure[3]))))
        return 0

    if not (EXAMPLE_DATA_DIR / "images").is_dir():
        fetch_example_data(EXAMPLE_DATA_DIR)
    data_dir = generate_dataset(EXAMPLE_DATA_DIR, CACHE_ROOT / f"audit-{args.pairs}", args.pairs)
    load_before = os.getloadavg()[0]
    rows = {what: run_in_subprocess(what, data_dir, CACHE_ROOT / f"audit-{args.pairs}.json")
            for what in ("audit", "contact sheet")}
    if args.before:
        code = checkout_before(args.before, CACHE_ROOT / f"audit-at-{args.before}")
        rows.update({f"{what}, at {args.before}": run_in_subprocess(
            what, data_dir, CACHE_ROOT / f"audit-{args.pairs}-at-{args.before}.json", code)
            for what in ("audit", "contact sheet")})
    print(f"{args.pairs} pairs of 256x256 in {data_dir}, {os.cpu_count()} cores, load average "
          f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print("| step | wall s | CPU s (all processes) | peak anon MB (PSS, all processes) | peak RSS MB (main process) |")
    print("|---|---:|---:|---:|---:|")
    for what, row in rows.items():
        print(f"| {what} | {row['seconds']:.1f} | {row['cpu_seconds']:.1f} | {row['peak_anon_mb']:.0f} "
              f"| {row['peak_rss_mb']:.0f} |")
    if args.before:
        for what in ("audit", "contact sheet"):
            old, new = rows[f"{what}, at {args.before}"], rows[what]
            print(f"{what}: {old['seconds'] / new['seconds']:.1f}x faster, {old['cpu_seconds'] / new['cpu_seconds']:.1f}x "
                  f"less CPU, {old['peak_anon_mb'] / new['peak_anon_mb']:.1f}x less anonymous memory than at "
                  f"{args.before}")
    print(f"flagged pairs: {rows['audit']['flagged']}; counts {rows['audit']['counts']}; "
          f"dataset findings {rows['audit']['findings']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
