"""Loader throughput and peak memory, side by side in one run: a naive loader, `DataLoader` cached and
streaming, an idiomatic `tf.data` pipeline, and this machine's memory-copy bound for the same batch bytes.

    python bench/bench_loader.py            # or `make bench`; the 20 real pairs + 5,000 generated pairs
    python bench/bench_loader.py --quick    # smoke run: small generated set, few batches

Each (data, batch size, loader) runs in its own subprocess, so its peak RSS is its own; RSS is reported
absolute and above that subprocess's baseline (interpreter + imports, TensorFlow included for tf.data).
Throughput is steady state: after a warm-up (a full epoch for the caching loaders, whose first epoch
decodes; a few batches for the others), a fixed number of batches (8,000 pairs for the in-memory loaders,
800 for those that read files) is timed in 10 chunks, and the median chunk rate is kept. The whole table is
measured `--rounds` times (default 2), configurations in turn, and each row shows its best round (peak RSS:
its largest), so a busy neighbour during one configuration does not skew the ratios. "start s" is the time
from constructing the loader to its first batch.
The generated set (seeded flips/shifts of the real pairs, same size and file types) is written once under
~/.cache/spine-seg-bench and reused.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))

import legacy_keras  # noqa: E402,F401  (before anything can import TensorFlow)
import numpy as np  # noqa: E402
import psutil  # noqa: E402

import loader  # noqa: E402

LOADERS = ("naive", "cached", "streaming", "tf.data", "copy bound")
CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "spine-seg-bench"
COPY_POOL = 256  # float32 pairs the copy bound copies from: 256 MB, well beyond the last-level cache
TIMED_CHUNKS = 10
MB = 2**20
READS_FILES = ("naive", "streaming")  # 10x slower: time fewer pairs


# ---------------------------------------------------------------- data


def generate_dataset(templates: Path, dest: Path, n_pairs: int, seed: int = 0) -> Path:
    """Write `n_pairs` seeded flips/shifts of the pairs in `templates` to `dest` (PNG + int64 .npy); reuse if done."""
    if (dest / ".complete").is_file():
        return dest
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    pairs = [loader.read_pair(*paths) for paths in loader.pair_files(templates).values()]
    for kind in ("images", "masks"):
        (dest / kind).mkdir(parents=True, exist_ok=True)

    def write(k):
        rng = np.random.default_rng([seed, k])
        image, mask = pairs[k % len(pairs)]
        shift = tuple(rng.integers(-16, 17, size=2))
        flip = np.fliplr if rng.random() < 0.5 else np.asarray
        Image.fromarray(np.roll(flip(image), shift, (0, 1))).save(dest / "images" / f"{k}.png")
        np.save(dest / "masks" / f"{k}.npy", np.roll(flip(mask), shift, (0, 1)).astype(np.int64))

    with ThreadPoolExecutor(os.cpu_count()) as pool:  # PNG compression releases the GIL
        list(loader._progress(pool.map(write, range(n_pairs)), n_pairs, True, f"generating {dest.name}"))
    (dest / ".complete").touch()
    return dest


def real_dataset(data_dir: Path) -> Path:
    """The example pairs, fetched (sha256-checked) if they are not there yet."""
    if not (data_dir / "images").is_dir():
        loader.fetch_example_data(data_dir)
    return data_dir


# ---------------------------------------------------------------- the loaders under test
# Each factory returns (endless iterator of batches, number of batches in one epoch).


def naive_batches(data_dir, batch_size):
    """The original exercise: read PNG + np.load per batch, /255 in float64, np.eye(C)[mask]."""
    from PIL import Image

    pairs = list(loader.pair_files(data_dir).values())
    n_classes = len(loader.LABELS)

    def batches():
        for epoch in range(10**9):
            order = np.random.default_rng(epoch).permutation(len(pairs))
            for start in range(0, len(order) - batch_size + 1, batch_size):
                chosen = [pairs[i] for i in order[start : start + batch_size]]
                images = np.stack([np.array(Image.open(image)) / 255 for image, _ in chosen])[..., None]
                masks = np.stack([np.eye(n_classes)[np.load(mask)] for _, mask in chosen])
                yield images, masks

    return batches(), len(pairs) // batch_size


def data_loader_batches(data_dir, batch_size, cache):
    """`DataLoader.get_batch` over all pairs (one split holds them all)."""
    data = loader.DataLoader(data_dir, batch_size=batch_size, split=(1.0, 0.0, 0.0), cache=cache, progress=False)
    return data.get_batch("train"), data.steps_per_epoch("train")


def tf_data_batches(data_dir, batch_size):
    """Idiomatic tf.data: decode -> cache -> shuffle -> batch -> prefetch, iterated once per epoch as
    `model.fit(dataset, epochs=...)` does (float32 one-hot cached; the last batch of an epoch may be short)."""
    tf = legacy_keras.import_tensorflow()
    pairs = list(loader.pair_files(data_dir).values())
    n_classes = len(loader.LABELS)

    def decode(image_path, mask_path):
        image = tf.cast(tf.io.decode_png(tf.io.read_file(image_path), channels=1), tf.float32) / 255.0
        mask = tf.numpy_function(np.load, [mask_path], tf.int64)
        return image, tf.one_hot(mask, n_classes, dtype=tf.float32)

    paths = tf.data.Dataset.from_tensor_slices(tuple([str(p) for p in column] for column in zip(*pairs)))
    dataset = (paths.map(decode, num_parallel_calls=tf.data.AUTOTUNE).cache()
               .shuffle(len(pairs), seed=0).batch(batch_size).prefetch(tf.data.AUTOTUNE))

    def batches():
        while True:
            yield from dataset  # a new iterator each epoch, like Keras fit

    return batches(), -(-len(pairs) // batch_size)


def copy_bound_batches(data_dir, batch_size):
    """The least memory work for the same batch bytes: copy precomputed float32 image + one-hot into one buffer."""
    names = list(loader.pair_files(data_dir).values())
    pool = [loader.read_pair(*paths) for paths in names[:COPY_POOL]]
    shape, n_classes = pool[0][1].shape, len(loader.LABELS)
    images = np.stack([loader.image_to_float(image) for image, _ in pool])[..., None]
    onehots = np.stack([np.eye(n_classes, dtype=np.float32)[mask] for _, mask in pool])
    image_batch = np.empty((batch_size, *shape, 1), dtype=np.float32)
    onehot_batch = np.empty((batch_size, *shape, n_classes), dtype=np.float32)

    def batches():
        for epoch in range(10**9):
            order = np.random.default_rng(epoch).permutation(len(names)) % len(pool)
            for start in range(0, len(order) - batch_size + 1, batch_size):
                for k, i in enumerate(order[start : start + batch_size]):
                    np.copyto(image_batch[k], images[i])
                    np.copyto(onehot_batch[k], onehots[i])
                yield image_batch, onehot_batch

    return batches(), len(names) // batch_size


FACTORIES = {
    "naive": naive_batches,
    "cached": lambda data_dir, batch_size: data_loader_batches(data_dir, batch_size, cache=True),
    "streaming": lambda data_dir, batch_size: data_loader_batches(data_dir, batch_size, cache=False),
    "tf.data": tf_data_batches,
    "copy bound": copy_bound_batches,
}
CACHING = ("cached", "tf.data")  # their first epoch decodes, so warm up for a whole epoch


# ---------------------------------------------------------------- one configuration (in a subprocess)


def peak_rss() -> int:
    """This process's peak RSS in bytes (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


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


def measure(name: str, data_dir: Path, batch_size: int, n_batches: int, warmup_cap: int) -> dict:
    """Build loader `name`, time its first batch, warm it up, time its steady state; RSS figures in bytes."""
    if name == "tf.data":
        legacy_keras.import_tensorflow()  # part of the baseline, like numpy is for the others
    baseline = psutil.Process().memory_info().rss
    start = time.perf_counter()
    batches, epoch = FACTORIES[name](data_dir, batch_size)
    next(batches)
    start_s = time.perf_counter() - start
    for _ in range(epoch if name in CACHING else min(epoch, warmup_cap)):
        next(batches)
    rate = timed_rate(batches, n_batches)
    peak = peak_rss()
    return {"pairs_per_s": rate, "start_s": start_s, "peak_rss": peak, "rss_above_base": peak - baseline}


def run_in_subprocess(name, data_dir, batch_size, n_batches, warmup_cap) -> dict:
    """`measure` in a fresh interpreter, so one configuration's memory never counts against another's."""
    command = [sys.executable, __file__, "--measure", name, str(data_dir), str(batch_size), str(n_batches),
               str(warmup_cap)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_DIR)
    if done.returncode:
        raise RuntimeError(f"{name} on {data_dir} (B={batch_size}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the table


def best_round(measured: list[dict]) -> dict:
    """One configuration's rounds combined: the best throughput and start, the largest peak RSS."""
    best = max(measured, key=lambda row: row["pairs_per_s"])
    return {**best, "start_s": min(row["start_s"] for row in measured),
            "peak_rss": max(row["peak_rss"] for row in measured),
            "rss_above_base": max(row["rss_above_base"] for row in measured)}


def uint8_bytes(data_dir: Path) -> int:
    """Size of the data as uint8 image + uint8 mask arrays (what the cache holds)."""
    pairs = loader.pair_files(data_dir)
    image, mask = loader.read_pair(*next(iter(pairs.values())))
    return len(pairs) * (image.size * image.itemsize + mask.size)


def format_table(results: dict) -> str:
    """Markdown table; ratios against the naive loader, tf.data and the copy bound of the same data and B."""
    lines = ["| data | B | loader | pairs/s | × naive | × tf.data | % of copy bound | peak RSS MB (above base) "
             "| start s |", "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for (data, batch_size, name), row in results.items():
        rate = row["pairs_per_s"]
        ratio = {other: rate / results[(data, batch_size, other)]["pairs_per_s"] for other in LOADERS}
        rss = f"{row['peak_rss'] / MB:,.0f} ({row['rss_above_base'] / MB:,.0f})"
        lines.append(f"| {data} | {batch_size} | {name} | {rate:,.0f} | {ratio['naive']:.1f} | {ratio['tf.data']:.2f} "
                     f"| {100 * ratio['copy bound']:.0f}% | {rss} | {row['start_s']:.2f} |")
    return "\n".join(lines)


def target_checks(results: dict, data_names: list, data_bytes: dict, batch_size: int = 16) -> list[str]:
    """The issue's targets (cached, steady state, B=16), each as PASS/FAIL with the numbers it compares."""
    small, large = data_names
    rate = lambda data, name: results[(data, batch_size, name)]["pairs_per_s"]  # noqa: E731
    rss = lambda data, name: results[(data, batch_size, name)]["rss_above_base"] / MB  # noqa: E731
    checks = []  # (label, measured, limit, pass when measured >= limit)
    for data in data_names:
        checks += [(f"{data}: cached / naive", rate(data, "cached") / rate(data, "naive"), 15, True),
                   (f"{data}: cached / copy bound", rate(data, "cached") / rate(data, "copy bound"), 0.6, True)]
    checks += [
        (f"{small}: cached / tf.data", rate(small, "cached") / rate(small, "tf.data"), 1.0, True),
        (f"{large}: cached / tf.data", rate(large, "cached") / rate(large, "tf.data"), 0.7, True),
        (f"{large}: cached RSS / tf.data RSS (above base)", rss(large, "cached") / rss(large, "tf.data"), 0.25, False),
        (f"{large}: cached RSS (above base) / uint8 data ({data_bytes[large] / MB:,.0f} MB)",
         rss(large, "cached") / (data_bytes[large] / MB), 1.3, False),
        (f"{large}: streaming RSS above base, MB", rss(large, "streaming"), 300, False),
    ]
    return [f"{'PASS' if (value >= limit) == at_least else 'FAIL'}  {label} = {value:,.2f}  "
            f"(target {'>=' if at_least else '<='} {limit:g})" for label, value, limit, at_least in checks]


# ---------------------------------------------------------------- command line


def measure_all(datasets: dict, batch_sizes, rounds: int, timed_pairs: int, warmup_cap: int) -> dict:
    """Every (data, batch size, loader), each in its own subprocess, `rounds` times; the best round of each."""
    runs = {}
    for round_ in range(rounds):
        for data, data_dir in datasets.items():
            for batch_size in batch_sizes:
                for name in LOADERS:
                    pairs = max(timed_pairs // 10, 64) if name in READS_FILES else timed_pairs
                    runs.setdefault((data, batch_size, name), []).append(run_in_subprocess(
                        name, data_dir, batch_size, max(TIMED_CHUNKS, pairs // batch_size), warmup_cap))
                    print(f"  round {round_ + 1}/{rounds}: measured {data}, B={batch_size}, {name}",
                          file=sys.stderr, flush=True)
    return {key: best_round(measured) for key, measured in runs.items()}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 generated pairs, few batches, 1 round")
    parser.add_argument("--pairs", type=int, help="size of the generated set (default 5000; 64 with --quick)")
    parser.add_argument("--timed-pairs", type=int, help="pairs timed per in-memory configuration (default 8000, "
                        "a tenth for loaders that read files; 64 with --quick)")
    parser.add_argument("--rounds", type=int, help="measure the table this many times (default 2; 1 with --quick)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--data-dir", type=Path, default=loader.EXAMPLE_DATA_DIR, help="the real pairs")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_ROOT, help="where generated sets are kept")
    parser.add_argument("--measure", nargs=5, help=argparse.SUPPRESS)  # internal: one configuration
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.measure:
        name, data_dir, batch_size, n_batches, warmup_cap = args.measure
        print(json.dumps(measure(name, Path(data_dir), int(batch_size), int(n_batches), int(warmup_cap))))
        return 0
    n_pairs = args.pairs or (64 if args.quick else 5000)
    rounds = args.rounds or (1 if args.quick else 2)
    real = real_dataset(args.data_dir)
    generated = generate_dataset(real, args.cache_dir / f"{real.name}-{n_pairs}-seed0", n_pairs)
    datasets = {f"{len(loader.pair_files(real))} real": real, f"{n_pairs:,} generated": generated}
    load_before = os.getloadavg()[0]
    results = measure_all(datasets, args.batch_sizes, rounds, args.timed_pairs or (64 if args.quick else 8000),
                          warmup_cap=2 if args.quick else 10)
    print(format_table(results))
    if 16 in args.batch_sizes:
        data_bytes = {data: uint8_bytes(data_dir) for data, data_dir in datasets.items()}
        print("\nTargets (cached, steady state, B=16):")
        print("\n".join(target_checks(results, list(datasets), data_bytes)))
    print(f"\n{os.cpu_count()} CPUs, 1-min load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after; "
          f"numpy {np.__version__}, python {sys.version.split()[0]}; best of {rounds} round(s); "
          f"generated set: {generated}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
