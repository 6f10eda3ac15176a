"""The review notebook at scale, in a real browser: time from Run All to the UI, step latency, kernel memory.

    .venv/bin/python bench/bench_review.py                  # 2,000 generated pairs (written once, ~1 min)
    .venv/bin/python bench/bench_review.py --pairs 200 --steps 20   # a smoke run

Pairs: seeded flips/shifts of the example pairs (data/spine-mri, fetched if missing), 256x256, images/ + masks/
PNG with the example's dataset.json, written once to ~/.cache/maskpair-bench/review-<n>/. Each scenario starts
its own JupyterLab (temp notebook folder, the project installed) and headless Chromium (/usr/bin/chromium),
opens notebooks/02 on a kernel started beforehand, clicks Run > Run All Cells and measures:

- UI s: from the Run All click until the review image is loaded in the page;
- step ms: from the key press (page JS: a capture listener on window, performance.now()) until the review
  picture's `src` changed (MutationObserver) and until the new picture is loaded (`load` event): median and p95,
  for `j` (next) and `a` (a verdict, then the next unreviewed example), the reviewer's pace (a pause between
  key presses, --pause-ms) and back to back (the next key as soon as the picture is loaded);
- kernel MB: peak anonymous memory of the kernel process (RssAnon, sampled every 0.2 s; what it really holds,
  GUIDE.md) and its VmHWM (peak RSS), plus the peak of the audit's worker processes, if any.

Scenarios: "fresh" (no current audit report: the audit runs in the kernel's background, steps are measured
while it runs and after), then "reused" (the report the first run saved is current: no audit at all).

    .venv/bin/python bench/bench_review.py --pairs 2000 --in-process   # no browser: the kernel's share of a step

--in-process times what the kernel does for a key (`ReviewApp.handle_key`: the session's step or verdict, the
picture, the widgets' new values) in this process, without JupyterLab, the browser or the audit: the figure a
change of the review's Python code moves, free of the browser's and the machine's noise. Run it with another
checkout's package first on PYTHONPATH to compare two versions.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from maskpair.data.fetch import fetch_example_data
from maskpair.data.files import pair_files
from maskpair.data.inspection import progress_bar

PROJECT_DIR = Path(__file__).resolve().parents[1]
CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "maskpair-bench"
TEMPLATES = PROJECT_DIR / "data" / "spine-mri"
NOTEBOOK = "notebooks/02_verify_alignment.ipynb"
MB = 2**20

# a capture listener on window runs first: before the picture's own listener and before JupyterLab's
LATENCY_JS = """() => {
  const img = document.querySelector('.review-image img');
  const b = window.__bench = {t0: null, changed: null, loaded: null};
  window.addEventListener('keydown', () => { b.t0 = performance.now(); b.changed = b.loaded = null; }, true);
  new MutationObserver(() => { if (b.t0 !== null && b.changed === null) b.changed = performance.now(); })
    .observe(img, {attributes: true, attributeFilter: ['src']});
  img.addEventListener('load', () => { if (b.changed !== null && b.loaded === null) b.loaded = performance.now(); });
}"""


def browser_helpers():
    """tests/test_browser.py's Lab driver (a Lab server, Chromium, a Run All that survives Lab's dialogs)."""
    spec = importlib.util.spec_from_file_location("review_browser", PROJECT_DIR / "tests" / "test_browser.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- data


def generate_pairs(dest: Path, n_pairs: int, templates: Path = TEMPLATES, seed: int = 0) -> Path:
    """Write `n_pairs` seeded flips/shifts of the template pairs (PNG image + PNG mask); reuse if done."""
    if (dest / ".complete").is_file():
        return dest
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    if not (templates / "images").is_dir():
        fetch_example_data(templates)
    pairs = []
    for image_path, mask_path in pair_files(templates).values():
        pairs.append((np.asarray(Image.open(image_path).convert("L")), np.asarray(Image.open(mask_path))
                      if mask_path.suffix == ".png" else np.load(mask_path).astype(np.uint8)))
    for kind in ("images", "masks"):
        (dest / kind).mkdir(parents=True, exist_ok=True)
    described = templates / "dataset.json"
    if not described.is_file():
        described = templates.parent / f"{templates.name}.dataset.json"
    if described.is_file():
        (dest / "dataset.json").write_text(described.read_text())

    def write(k):
        rng = np.random.default_rng([seed, k])
        image, mask = pairs[k % len(pairs)]
        shift = tuple(int(s) for s in rng.integers(-16, 17, size=2))
        flip = np.fliplr if rng.random() < 0.5 else np.asarray
        Image.fromarray(np.roll(flip(image), shift, (0, 1))).save(dest / "images" / f"case_{k:04d}.png")
        Image.fromarray(np.roll(flip(mask), shift, (0, 1)).astype(np.uint8)).save(dest / "masks" / f"case_{k:04d}.png")

    with ThreadPoolExecutor(os.cpu_count()) as pool:  # PNG compression releases the GIL
        list(progress_bar(pool.map(write, range(n_pairs)), n_pairs, True, f"generating {dest.name}"))
    (dest / ".complete").touch()
    return dest


# ---------------------------------------------------------------- measuring


class MemorySampler:
    """Peak RssAnon and VmHWM of a process, and the peak summed RSS of its children, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.pid, self.interval = pid, interval
        self.peak_anon = self.peak_hwm = self.peak_children = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        import psutil

        process = psutil.Process(self.pid)
        while not self._stop.is_set():
            try:
                status = Path(f"/proc/{self.pid}/status").read_text()
                fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
                self.peak_anon = max(self.peak_anon, int(fields["RssAnon"].split()[0]) * 1024)
                self.peak_hwm = max(self.peak_hwm, int(fields["VmHWM"].split()[0]) * 1024)
                children = sum(child.memory_info().rss for child in process.children(recursive=True))
                self.peak_children = max(self.peak_children, children)
            except (OSError, KeyError, psutil.Error):
                pass
            self._stop.wait(self.interval)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {"kernel_anon_mb": self.peak_anon / MB, "kernel_hwm_mb": self.peak_hwm / MB,
                "children_mb": self.peak_children / MB}


def step_latencies(page, key: str, steps: int, pause_ms: float) -> tuple[list[float], list[float], int]:
    """([key -> src changed ms], [key -> picture loaded ms], steps that timed out) over `steps` presses."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    changed, loaded, lost = [], [], 0
    for _ in range(steps):
        page.keyboard.press(key)
        try:
            page.wait_for_function("() => window.__bench.loaded !== null", timeout=10_000, polling="raf")
        except PlaywrightTimeout:  # no new picture within 10 s
            lost += 1
            continue
        times = page.evaluate("() => window.__bench")
        changed.append(times["changed"] - times["t0"])
        loaded.append(times["loaded"] - times["t0"])
        if pause_ms:
            page.wait_for_timeout(pause_ms)
    return changed, loaded, lost


def summary(values: list[float]) -> str:
    """'median / p95' in ms, or '-'."""
    if not values:
        return "-"
    return f"{statistics.median(values):.0f} / {float(np.percentile(values, 95)):.0f}"


def audit_running(page) -> bool:
    return "running" in page.locator(".review-audit").inner_text()


def run_scenario(helpers, name: str, data_dir: Path, work: Path, steps: int, pause_ms: float) -> dict:
    """One Lab + Chromium session over the review notebook; the measurements of one table row group."""
    root = helpers.review_notebook_root(work / f"lab-{name}", {
        "data_dir": str(data_dir), "output_dir": str(work / "out" / "02_verify_alignment"), "seed": 0,
        "review_log": str(work / f"{name}.verdicts.jsonl"), "reviewer": "bench", "label_issues": ""})
    lab = helpers.Lab(root, work / f"lab-{name}.log")
    rows = []
    try:
        with helpers.chromium_page(1500, 1100) as page:
            kernel_sampler = []

            def sample_when_started():  # the kernel process exists once the session is created
                for _ in range(600):
                    pid = lab.kernel_pid()
                    if pid:
                        kernel_sampler.append(MemorySampler(pid))
                        return
                    time.sleep(0.1)

            threading.Thread(target=sample_when_started, daemon=True).start()
            ui_s = helpers.open_and_run_all(page, lab, NOTEBOOK, timeout_s=300)
            page.evaluate(LATENCY_JS)
            image = page.locator(".review-image")
            image.scroll_into_view_if_needed()
            page.mouse.click(*_centre(image))  # the picture takes the keys ...
            page.mouse.move(5, 5)              # ... and keeps them wherever the pointer goes
            running = audit_running(page)
            if running:
                changed, loaded, lost = step_latencies(page, "j", steps, pause_ms)
                rows.append({"what": "j, while the audit runs", "changed": changed, "loaded": loaded, "lost": lost,
                             "still_running": audit_running(page)})
                started = time.monotonic()
                page.locator(".review-audit").get_by_text("flagged").wait_for(timeout=900_000)
                audit_wait = time.monotonic() - started
            else:
                audit_wait = 0.0
            audit_text = page.locator(".review-audit").inner_text()
            kinds = (("j", "j", pause_ms), ("j", "j, back to back", 0), ("a", "a (verdict + next)", pause_ms))
            for key, what, pause in kinds:
                changed, loaded, lost = step_latencies(page, key, steps, pause)
                rows.append({"what": what, "changed": changed, "loaded": loaded, "lost": lost})
            page.keyboard.press("u")
            tracebacks = helpers.output_tracebacks(page)
            page.screenshot(path=str(work / f"{name}.png"))
        memory = kernel_sampler[0].stop() if kernel_sampler else {}
    finally:
        lab.stop()
    log = [json.loads(line) for line in (work / f"{name}.verdicts.jsonl").read_text().splitlines()]
    return {"scenario": name, "ui_s": ui_s, "audit_running_at_ui": running, "audit_wait_s": audit_wait,
            "audit": audit_text, "rows": rows, "memory": memory, "tracebacks": tracebacks, "log_lines": len(log)}


def in_process_steps(data_dir: Path, n_pairs: int, work: Path, steps: int, pause_ms: float) -> str:
    """Median / p95 ms of ReviewApp.handle_key for `j` and `a` in this process (no audit, no browser), at the
    reviewer's pace (the prefetch thread gets the pause) and back to back."""
    from maskpair.review.app import ReviewApp

    app = ReviewApp(data_dir, None, work / "in-process.verdicts.jsonl", reviewer="bench", run_audit=False,
                    raise_errors=True)
    lines = [f"| keys ({n_pairs:,} pairs, in process) | handle_key ms (median / p95) |", "|---|---:|"]
    for key, what, pause in (("j", "j", pause_ms), ("j", "j, back to back", 0), ("a", "a (verdict + next)", pause_ms)):
        times = []
        for _ in range(steps):
            started = time.perf_counter()
            app.handle_key(key)
            times.append((time.perf_counter() - started) * 1000)
            time.sleep(pause / 1000)
        lines.append(f"| {what} | {summary(times)} |")
    return "\n".join(lines)


def _centre(locator) -> tuple[float, float]:
    box = locator.bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + min(box["height"] / 2, 200)


def format_table(results: list[dict], n_pairs: int, pause_ms: float) -> str:
    lines = [f"| scenario ({n_pairs:,} pairs) | UI after Run All s | keys | key→src changed ms (median / p95) | "
             f"key→picture loaded ms (median / p95) | steps lost | kernel peak RssAnon MB | kernel VmHWM MB | "
             f"audit workers peak MB |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for result in results:
        memory = result["memory"]
        for k, row in enumerate(result["rows"]):
            first = k == 0
            lines.append(
                f"| {result['scenario'] if first else ''} | {result['ui_s']:.1f} | {row['what']} | "
                f"{summary(row['changed'])} | {summary(row['loaded'])} | {row['lost']} | "
                + (f"{memory.get('kernel_anon_mb', 0):,.0f} | {memory.get('kernel_hwm_mb', 0):,.0f} | "
                   f"{memory.get('children_mb', 0):,.0f} |" if first else " | | |"))
    notes = [f"pace: {pause_ms:.0f} ms between key presses (rows without 'back to back'); load average "
             f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores"]
    for result in results:
        notes.append(f"{result['scenario']}: audit {'running' if result['audit_running_at_ui'] else 'not running'} "
                     f"when the UI appeared, done {result['audit_wait_s']:.0f} s after the first steps; "
                     f"status '{result['audit']}'; {result['log_lines']} log lines; tracebacks: "
                     f"{len(result['tracebacks'])}")
    return "\n".join(lines + [""] + notes)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=100, help="key presses per row")
    parser.add_argument("--pause-ms", type=float, default=300, help="the reviewer's pace between key presses")
    parser.add_argument("--scenarios", nargs="+", default=["fresh", "reused"], choices=["fresh", "reused"])
    parser.add_argument("--work", type=Path, help="keep logs, reports and screenshots here (default: a temp folder)")
    parser.add_argument("--in-process", action="store_true", help="time the kernel's share of a step, no browser")
    args = parser.parse_args(argv)
    data_dir = generate_pairs(CACHE_ROOT / f"review-{args.pairs}", args.pairs)
    if args.in_process:
        with tempfile.TemporaryDirectory(prefix="bench-review-") as tmp:
            print(in_process_steps(data_dir, args.pairs, args.work or Path(tmp), args.steps, args.pause_ms))
        return 0
    helpers = browser_helpers()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-review-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.scenarios:
            print(f"running scenario {name} ...", flush=True)
            results.append(run_scenario(helpers, name, data_dir, work, args.steps, args.pause_ms))
            print(json.dumps({k: v for k, v in results[-1].items() if k != "rows"}, default=str), flush=True)
    print(format_table(results, args.pairs, args.pause_ms))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
