"""Loader throughput and memory, side by side in one run: a naive loader, `DataLoader` in memory (float and compact
batches), from its disk cache and streaming, idiomatic `tf.data` pipelines, and this machine's memory-copy bounds.

    python bench/bench_loader.py            # or `make bench`: 20 real pairs, 5,000 and 20,000 generated pairs
    python bench/bench_loader.py --quick    # smoke run: 64 generated pairs, B=16 only, few batches, 1 round

Each (data, batch size, loader) runs in its own subprocess, so its memory is its own: peak RSS (VmHWM) and peak
RssAnon (sampled every 10 ms; pages of a memory-mapped file count in RSS once touched but are not anonymous:
RssAnon is what a process really holds), both absolute and above that subprocess's baseline (interpreter +
imports, TensorFlow included where the row uses it). Throughput is steady state: after a warm-up (a full epoch
for the caching loaders, whose first epoch decodes or touches the cache's pages; a few batches for the others),
a fixed number of batches (8,000 pairs, 800 for the loaders that read files) is timed in 10 chunks, and the
median chunk rate is kept. The whole table is measured `--rounds` times (default 2), configurations in turn, and
each row shows its best round (memory: its largest), so a busy neighbour during one configuration does not skew
the ratios. "open s" is the loader's construction (for the disk cache: a reopen; its first open, which builds
it, is measured once per set and listed under the table), "first batch s" adds the first batch.
Generated sets (seeded flips/shifts of the real pairs, same size and file types, the real set's dataset.json)
are written once under ~/.cache/segkit-bench and reused; their disk caches beside them are rebuilt every run.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from maskpair.data.description import (
    DESCRIPTION_FILE,
    DatasetDescription,
    read_declared,
)
from maskpair.data.fetch import EXAMPLE_DATA_DIR, fetch_example_data
from maskpair.data.files import pair_files
from maskpair.data.inspection import describe, progress_bar
from maskpair.data.loader import DataLoader
from maskpair.data.reading import image_to_float, read_pair
from maskpair.training import legacy_keras

PROJECT_DIR = Path(__file__).resolve().parents[1]

# rows per (data, batch size); "u8"/"f32": the copy bound each row's "% of copy bound" refers to
LOADERS = {
    "naive": "f32",
    "cached": "f32",
    "cached compact": "u8",
    "disk compact": "u8",
    "disk tf_dataset": "f32",
    "streaming": "f32",
    "tf.data": "f32",
    "tf.data f32 cache": "f32",
    "copy bound f32": "f32",
    "copy bound u8": "u8",
}
TF_DATA = "tf.data"  # the reference of "x tf.data": uint8 cache, the idiomatic pipeline that fits at 20,000 pairs
CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "segkit-bench"
COPY_POOL_BYTES = 256 * 2**20  # the copy bounds copy from this much precomputed data: well beyond the LLC
TIMED_CHUNKS = 10
MB, GB = 2**20, 2**30
READS_FILES = ("naive", "streaming")  # 10x slower: time fewer pairs
CACHING = ("cached", "cached compact", "disk compact", "disk tf_dataset", "tf.data", "tf.data f32 cache")
USES_TENSORFLOW = ("disk tf_dataset", "tf.data", "tf.data f32 cache")
DATA_LOADER_ROWS = ("cached", "cached compact", "disk compact", "disk tf_dataset", "streaming")
FITS_SHARE = 0.5  # run the float32-cache tf.data only if its cache needs at most this share of MemAvailable


# ---------------------------------------------------------------- data


def generate_dataset(templates: Path, dest: Path, n_pairs: int, seed: int = 0) -> Path:
    """Write `n_pairs` seeded flips/shifts of the pairs in `templates` to `dest` (PNG + int64 .npy mask values)
    with the templates' dataset.json; reuse if done."""
    if (dest / ".complete").is_file():
        return dest
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    description = described(templates)
    values = np.array(description.class_values, dtype=np.int64)  # class index -> mask value
    pairs = [read_pair(*paths, description) for paths in pair_files(templates).values()]
    for kind in ("images", "masks"):
        (dest / kind).mkdir(parents=True, exist_ok=True)
    if (templates / DESCRIPTION_FILE).is_file():
        shutil.copyfile(templates / DESCRIPTION_FILE, dest / DESCRIPTION_FILE)

    def write(k):
        rng = np.random.default_rng([seed, k])
        image, labels = pairs[k % len(pairs)]
        shift = tuple(rng.integers(-16, 17, size=2))
        flip = np.fliplr if rng.random() < 0.5 else np.asarray
        image = np.roll(flip(image), shift, (0, 1))
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(dest / "images" / f"{k}.png")
        np.save(dest / "masks" / f"{k}.npy", values[np.roll(flip(labels), shift, (0, 1))])

    with ThreadPoolExecutor(os.cpu_count()) as pool:  # PNG compression releases the GIL
        list(progress_bar(pool.map(write, range(n_pairs)), n_pairs, True, f"generating {dest.name}"))
    (dest / ".complete").touch()
    return dest


def described(data_dir: Path):
    """The dataset's description: its dataset.json when that gives labels and channels (reading 40,000 headers
    at 20,000 pairs, as `describe` does, would add a minute to every row), else `describe`."""

    declared = read_declared(data_dir)
    return DatasetDescription(**declared) if {"labels", "channel_names"} <= declared.keys() else describe(data_dir)


def real_dataset(data_dir: Path) -> Path:
    """The example pairs, fetched (sha256-checked) if they are not there yet."""
    if not (data_dir / "images").is_dir():
        fetch_example_data(data_dir)
    return data_dir


# ---------------------------------------------------------------- the loaders under test
# Each factory returns (endless iterator of batches, number of batches in one epoch).


def naive_batches(data_dir, batch_size, description, disk_dir):
    """The original exercise: read PNG + np.load per batch, /255 in float64, np.eye(K)[mask]."""
    from PIL import Image

    pairs = list(pair_files(data_dir).values())

    def batches():
        for epoch in range(10**9):
            order = np.random.default_rng(epoch).permutation(len(pairs))
            for start in range(0, len(order) - batch_size + 1, batch_size):
                chosen = [pairs[i] for i in order[start : start + batch_size]]
                images = np.stack([np.array(Image.open(image)) / 255 for image, _ in chosen])[..., None]
                masks = np.stack([np.eye(description.n_classes)[np.load(mask)] for _, mask in chosen])
                yield images, masks

    return batches(), len(pairs) // batch_size


def data_loader(data_dir, batch_size, cache, disk_dir):
    """A `DataLoader` whose train split holds every pair."""
    return DataLoader(data_dir, batch_size=batch_size, split=(1.0, 0.0, 0.0), cache=cache,
                             cache_dir=disk_dir if cache == "disk" else None, progress=False)


def loader_batches(cache, compact):
    """Factory of `DataLoader.get_batch` batches (float, or compact uint8 image + label map)."""
    def batches(data_dir, batch_size, description, disk_dir):
        data = data_loader(data_dir, batch_size, cache, disk_dir)
        return data.get_batch("train", compact=compact), data.steps_per_epoch("train")

    return batches


def tf_dataset_batches(data_dir, batch_size, description, disk_dir):
    """`DataLoader(cache="disk").tf_dataset`: compact batches expanded to float32 + one-hot in the graph, as fit."""
    data = data_loader(data_dir, batch_size, "disk", disk_dir)
    return iter(data.tf_dataset("train")), data.steps_per_epoch("train")


def tf_data_batches(float_cache: bool):
    """Factory of idiomatic tf.data: decode -> cache -> shuffle -> batch -> prefetch, iterated once per epoch as
    `model.fit(dataset, epochs=...)` does (the last batch of an epoch may be short). The cache holds uint8
    image + uint8 label map, made float32 + one-hot after batching (what fits at 20,000 pairs), or with
    `float_cache` float32 image + one-hot, made before caching (the issue's baseline: 16 bytes per pixel)."""
    def batches(data_dir, batch_size, description, disk_dir):
        tf = legacy_keras.import_tensorflow()
        pairs = list(pair_files(data_dir).values())
        n_classes, channels = description.n_classes, description.n_channels

        def expand(image, mask):
            return tf.cast(image, tf.float32) / 255.0, tf.one_hot(mask, n_classes, dtype=tf.float32)

        def decode(image_path, mask_path):
            image = tf.io.decode_png(tf.io.read_file(image_path), channels=channels)
            mask = tf.numpy_function(lambda path: np.load(path.decode()).astype(np.uint8), [mask_path], tf.uint8)
            return expand(image, mask) if float_cache else (image, mask)

        paths = tf.data.Dataset.from_tensor_slices(tuple([str(p) for p in column] for column in zip(*pairs)))
        dataset = (paths.map(decode, num_parallel_calls=tf.data.AUTOTUNE).cache()
                   .shuffle(len(pairs), seed=0).batch(batch_size))
        if not float_cache:
            dataset = dataset.map(expand, num_parallel_calls=tf.data.AUTOTUNE)
        dataset = dataset.prefetch(tf.data.AUTOTUNE)

        def endless():
            while True:
                yield from dataset  # a new iterator each epoch, like Keras fit

        return endless(), -(-len(pairs) // batch_size)

    return batches


def copy_bound_batches(compact: bool):
    """Factory of the least memory work for the same batch bytes: copy precomputed pairs into one reused batch
    buffer, float32 image + one-hot, or (compact) uint8 image + uint8 label map."""
    def batches(data_dir, batch_size, description, disk_dir):
        paths = list(pair_files(data_dir).values())
        first_image, first_labels = read_pair(*paths[0], description)
        bytes_per_pixel = (1 + first_image.shape[-1]) if compact else 4 * (first_image.shape[-1] + description.n_classes)
        pool_size = max(1, min(len(paths), COPY_POOL_BYTES // (first_labels.size * bytes_per_pixel)))
        pool = [read_pair(*pair, description) for pair in paths[:pool_size]]
        if compact:
            images = np.stack([image for image, _ in pool])
            targets = np.stack([labels for _, labels in pool])
        else:
            images = np.stack([image_to_float(image) for image, _ in pool])
            targets = np.stack([np.eye(description.n_classes, dtype=np.float32)[labels] for _, labels in pool])
        image_batch = np.empty((batch_size, *images.shape[1:]), images.dtype)
        target_batch = np.empty((batch_size, *targets.shape[1:]), targets.dtype)

        def endless():
            for epoch in range(10**9):
                order = np.random.default_rng(epoch).permutation(len(paths)) % len(pool)
                for start in range(0, len(order) - batch_size + 1, batch_size):
                    for k, i in enumerate(order[start : start + batch_size]):
                        np.copyto(image_batch[k], images[i])
                        np.copyto(target_batch[k], targets[i])
                    yield image_batch, target_batch

        return endless(), len(paths) // batch_size

    return batches


FACTORIES = {
    "naive": naive_batches,
    "cached": loader_batches(True, compact=False),
    "cached compact": loader_batches(True, compact=True),
    "disk compact": loader_batches("disk", compact=True),
    "disk tf_dataset": tf_dataset_batches,
    "streaming": loader_batches(False, compact=False),
    "tf.data": tf_data_batches(float_cache=False),
    "tf.data f32 cache": tf_data_batches(float_cache=True),
    "copy bound f32": copy_bound_batches(compact=False),
    "copy bound u8": copy_bound_batches(compact=True),
}


# ---------------------------------------------------------------- one configuration (in a subprocess)


def status_kb(field: str) -> int:
    """A memory field of /proc/self/status (VmHWM, RssAnon, ...) in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class AnonPeak:
    """Peak RssAnon of this process, sampled every 10 ms by a thread (the kernel keeps a peak of RSS only)."""

    def __init__(self):
        self.peak_kb, self._stop = status_kb("RssAnon"), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self):
        while not self._stop.wait(0.01):
            self.peak_kb = max(self.peak_kb, status_kb("RssAnon"))

    def stop(self) -> int:
        """Stop sampling; the peak in bytes."""
        self._stop.set()
        self._thread.join()
        return max(self.peak_kb, status_kb("RssAnon")) * 1024


def timed_rate(batches, n_batches: int) -> float:
    """Median pairs/s over TIMED_CHUNKS chunks of the next `n_batches` batches (median: robust to neighbours).

    Pairs are counted as delivered, so a loader whose epochs end in a short batch is not flattered."""
    per_chunk = max(1, n_batches // TIMED_CHUNKS)
    rates = []
    for _ in range(TIMED_CHUNKS):
        start, pairs = time.perf_counter(), 0
        for _ in range(per_chunk):
            pairs += len(next(batches)[0])
        rates.append(pairs / (time.perf_counter() - start))
    return statistics.median(rates)


def measure(name: str, data_dir: Path, batch_size: int, n_batches: int, warmup_cap: int, disk_dir: Path) -> dict:
    """Build loader `name`, time its construction and first batch, warm it up, time its steady state."""
    if name in USES_TENSORFLOW:
        legacy_keras.import_tensorflow()  # part of the baseline, like numpy is for the others
    description = None if name in DATA_LOADER_ROWS else described(data_dir)  # DataLoader describes itself
    base_rss, base_anon = status_kb("VmRSS") * 1024, status_kb("RssAnon") * 1024
    anon = AnonPeak()
    start = time.perf_counter()
    batches, epoch = FACTORIES[name](data_dir, batch_size, description, disk_dir)
    open_s = time.perf_counter() - start
    next(batches)
    first_batch_s = time.perf_counter() - start
    for _ in range(epoch if name in CACHING else min(epoch, warmup_cap)):
        next(batches)
    rate = timed_rate(batches, n_batches)
    peak_anon, peak = anon.stop(), status_kb("VmHWM") * 1024
    return {"pairs_per_s": rate, "open_s": open_s, "first_batch_s": first_batch_s, "peak_rss": peak,
            "rss_above_base": peak - base_rss, "peak_anon": peak_anon, "anon_above_base": peak_anon - base_anon,
            "load": os.getloadavg()[0]}


def build_disk_cache(data_dir: Path, disk_dir: Path) -> dict:
    """First open: delete the disk cache of `data_dir`, then time `DataLoader(cache="disk")` building it."""
    shutil.rmtree(disk_dir, ignore_errors=True)
    base_anon = status_kb("RssAnon") * 1024
    anon = AnonPeak()
    start = time.perf_counter()
    data_loader(data_dir, 16, "disk", disk_dir)
    seconds = time.perf_counter() - start
    size = sum(path.stat().st_size for path in disk_dir.rglob("*") if path.is_file())
    return {"build_s": seconds, "anon_above_base": anon.stop() - base_anon, "bytes": size,
            "load": os.getloadavg()[0]}


def run_in_subprocess(*arguments) -> dict:
    """`measure` (or `build_disk_cache`) in a fresh interpreter, so one configuration's memory never counts
    against another's."""
    command = [sys.executable, __file__, *map(str, arguments)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_DIR)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command[2:])} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the table


def best_round(measured: list[dict]) -> dict:
    """One configuration's rounds combined: the best throughput and start, the largest memory, the highest load."""
    best = max(measured, key=lambda row: row["pairs_per_s"])
    combined = {**best, **{key: min(row[key] for row in measured) for key in ("open_s", "first_batch_s")}}
    combined.update({key: max(row[key] for row in measured)
                     for key in ("peak_rss", "rss_above_base", "peak_anon", "anon_above_base", "load")})
    return combined


def float_cache_bytes(data_dir: Path) -> int:
    """Bytes the float32-cache tf.data pipeline holds: float32 image + one-hot of every pair."""
    description = described(data_dir)
    pairs = pair_files(data_dir)
    image, labels = read_pair(*next(iter(pairs.values())), description)
    return len(pairs) * labels.size * 4 * (image.shape[-1] + description.n_classes)


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise KeyError("MemAvailable")


def format_table(results: dict) -> str:
    """Markdown table; ratios against tf.data (uint8 cache) and the copy bound of the same data and B."""
    lines = ["| data | B | loader | pairs/s | × tf.data | % of copy bound | peak RSS MB (above base) "
             "| peak RssAnon MB (above base) | open s | first batch s | load |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (data, batch_size, name), row in results.items():
        if "skipped" in row:
            lines.append(f"| {data} | {batch_size} | {name} | {row['skipped']} | | | | | | | |")
            continue
        rate = row["pairs_per_s"]
        bound = LOADERS[name]
        versus_tf = rate / results[(data, batch_size, TF_DATA)]["pairs_per_s"]
        versus_bound = rate / results[(data, batch_size, f"copy bound {bound}")]["pairs_per_s"]
        rss = f"{row['peak_rss'] / MB:,.0f} ({row['rss_above_base'] / MB:,.0f})"
        anon = f"{row['peak_anon'] / MB:,.0f} ({row['anon_above_base'] / MB:,.0f})"
        lines.append(f"| {data} | {batch_size} | {name} | {rate:,.0f} | {versus_tf:.2f} | {100 * versus_bound:.0f}% "
                     f"{bound} | {rss} | {anon} | {row['open_s']:.2f} | {row['first_batch_s']:.2f} "
                     f"| {row['load']:.1f} |")
    return "\n".join(lines)


def format_builds(builds: dict) -> str:
    return "\n".join(f"disk cache of {data}: first open (build) {row['build_s']:.1f} s, RssAnon above base "
                     f"{row['anon_above_base'] / MB:,.0f} MB, {row['bytes'] / GB:.2f} GB on disk (load {row['load']:.1f})"
                     for data, row in builds.items())


def target_checks(results: dict, generated: list, batch_size: int = 16) -> list[str]:
    """The issue's targets (steady state, B=16, each generated set), PASS/FAIL with the numbers compared."""
    row = lambda data, name: results[(data, batch_size, name)]  # noqa: E731
    rate = lambda data, name: row(data, name)["pairs_per_s"]  # noqa: E731
    anon = lambda data, name: row(data, name)["anon_above_base"] / MB  # noqa: E731
    checks = []  # (label, measured, limit, pass when measured >= limit)
    for data in generated:
        baselines = [TF_DATA] + (["tf.data f32 cache"] if "skipped" not in row(data, "tf.data f32 cache") else [])
        for baseline in baselines:
            checks += [(f"{data}: disk compact / {baseline} pairs/s", rate(data, "disk compact") / rate(data, baseline),
                        1.0, True),
                       (f"{data}: disk compact / {baseline} RssAnon above base",
                        anon(data, "disk compact") / anon(data, baseline), 0.25, False)]
        checks += [
            (f"{data}: disk compact / copy bound u8", rate(data, "disk compact") / rate(data, "copy bound u8"), 0.5, True),
            (f"{data}: disk compact RssAnon above base, MB", anon(data, "disk compact"), 300, False),
            (f"{data}: disk cache reopen (DataLoader constructor), s", row(data, "disk compact")["open_s"], 2.0, False),
        ]
    return [f"{'PASS' if (value >= limit) == at_least else 'FAIL'}  {label} = {value:,.2f}  "
            f"(target {'>=' if at_least else '<='} {limit:g})" for label, value, limit, at_least in checks]


# ---------------------------------------------------------------- command line


def measure_all(datasets: dict, rounds: int, timed_pairs: int, warmup_cap: int, disk_dirs: dict) -> dict:
    """Every (data, batch size, loader), each in its own subprocess, `rounds` times; the best round of each.

    The float32-cache tf.data is skipped where its cache would not fit (a row says so, with the bytes)."""
    runs, skipped = {}, {}
    for data, (data_dir, _) in datasets.items():
        needed, available = float_cache_bytes(data_dir), mem_available()
        if needed > FITS_SHARE * available:
            skipped[data] = f"does not fit: float32 cache needs {needed / GB:.1f} GB, {available / GB:.1f} GB available"
    for round_ in range(rounds):
        for data, (data_dir, batch_sizes) in datasets.items():
            for batch_size in batch_sizes:
                for name in LOADERS:
                    if name == "tf.data f32 cache" and data in skipped:
                        runs[(data, batch_size, name)] = [{"skipped": skipped[data]}]
                        continue
                    pairs = max(timed_pairs // 10, 64) if name in READS_FILES else timed_pairs
                    runs.setdefault((data, batch_size, name), []).append(run_in_subprocess(
                        "--measure", name, data_dir, batch_size, max(TIMED_CHUNKS, pairs // batch_size), warmup_cap,
                        disk_dirs[data]))
                    print(f"  round {round_ + 1}/{rounds}: measured {data}, B={batch_size}, {name} "
                          f"(load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
    return {key: measured[0] if "skipped" in measured[0] else best_round(measured) for key, measured in runs.items()}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 generated pairs, B=16 only, few batches, "
                        "1 round")
    parser.add_argument("--pairs", type=int, nargs="+", help="sizes of the generated sets (default 5000 20000; "
                        "64 with --quick)")
    parser.add_argument("--timed-pairs", type=int, help="pairs timed per in-memory configuration (default 8000, "
                        "a tenth for loaders that read files; 64 with --quick)")
    parser.add_argument("--rounds", type=int, help="measure the table this many times (default 2; 1 with --quick)")
    parser.add_argument("--data-dir", type=Path, default=EXAMPLE_DATA_DIR, help="the real pairs")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_ROOT, help="where generated sets are kept")
    parser.add_argument("--measure", nargs=6, help=argparse.SUPPRESS)  # internal: one configuration
    parser.add_argument("--build", nargs=2, help=argparse.SUPPRESS)  # internal: one disk cache's first open
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.measure:
        name, data_dir, batch_size, n_batches, warmup_cap, disk_dir = args.measure
        print(json.dumps(measure(name, Path(data_dir), int(batch_size), int(n_batches), int(warmup_cap),
                                 Path(disk_dir))))
        return 0
    if args.build:
        print(json.dumps(build_disk_cache(*map(Path, args.build))))
        return 0
    sizes = args.pairs or ([64] if args.quick else [5000, 20000])
    rounds = args.rounds or (1 if args.quick else 2)
    real = real_dataset(args.data_dir)
    datasets = {f"{len(pair_files(real))} real": (real, [16] if args.quick else [4, 16])}
    for n_pairs in sizes:
        generated = generate_dataset(real, args.cache_dir / f"{real.name}-{n_pairs}-seed0", n_pairs)
        datasets[f"{n_pairs:,} generated"] = (generated, [16])
    disk_dirs = {data: args.cache_dir / f"{data_dir.name}.cache" for data, (data_dir, _) in datasets.items()}
    load_before = os.getloadavg()[0]
    builds = {}
    for data, (data_dir, _) in datasets.items():
        builds[data] = run_in_subprocess("--build", data_dir, disk_dirs[data])
        print(f"  built the disk cache of {data} (load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
    results = measure_all(datasets, rounds, args.timed_pairs or (64 if args.quick else 8000),
                          2 if args.quick else 10, disk_dirs)
    print(format_table(results))
    print()
    print(format_builds(builds))
    print("\nTargets (steady state, B=16; disk compact = DataLoader(cache=\"disk\") compact batches):")
    print("\n".join(target_checks(results, list(datasets)[1:])))
    print(f"\n{os.cpu_count()} CPUs, 1-min load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after; "
          f"numpy {np.__version__}, python {sys.version.split()[0]}; best of {rounds} round(s); "
          f"generated sets under {args.cache_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
