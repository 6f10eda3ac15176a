"""Loader throughput and memory, side by side in one run: a naive loader, `DataLoader` in memory (float and compact
batches), from its disk cache and streaming, what `model.fit` receives (`DataLoader.tf_dataset`, iterated as fit
iterates it), idiomatic `tf.data` pipelines, and this machine's memory-copy bounds; the in-memory cache's peak
memory over an epoch; and a whole fit at batch 16, its input wait per epoch.

    python bench/bench_loader.py            # or `make bench`: 20 real pairs, 5,000 and 20,000 generated pairs
    python bench/bench_loader.py --quick    # smoke run: 64 generated pairs, B=16 only, few batches, 1 round

Each (data, batch size, loader) runs in its own subprocess, so its memory is its own: peak RSS (VmHWM) and peak
RssAnon (sampled every 10 ms; pages of a memory-mapped file count in RSS once touched but are not anonymous:
RssAnon is what a process really holds), both absolute and above that subprocess's baseline (interpreter +
imports, TensorFlow included where the row uses it). Throughput is steady state: after a warm-up (a full epoch
for the caching loaders, whose first epoch decodes or touches the cache's pages; a few batches for the others),
a fixed number of batches (8,000 pairs, 800 for the loaders that read files) is timed in 10 chunks, and the
median chunk rate is kept. TensorFlow pipelines are consumed as `model.fit` consumes them: a `tf.function` takes
each batch from the iterator inside the graph (the tensors never become numpy arrays). The whole table is
measured `--rounds` times (default 2), configurations in turn, and each row shows its best round (memory: its
largest), so a busy neighbour during one configuration does not skew the ratios. "open s" is the loader's
construction (for the disk cache: a reopen; its first open, which builds it, is measured once per set and listed
under the table), "first batch s" adds the first batch.
Generated sets (seeded flips/shifts of the real pairs, same size and file types, the real set's dataset.json)
are written once under ~/.cache/maskpair-bench and reused; their disk caches beside them are rebuilt every run.
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
    "streaming": "f32",
    "augmented compact": "u8",
    "fit input, memory": "u8",
    "fit input, disk": "u8",
    "tf.data decode": "f32",
    "tf.data cache": "f32",
    "copy bound f32": "f32",
    "copy bound u8": "u8",
}
TF_DATA = ("tf.data decode", "tf.data cache")  # "x tf.data": over the faster of the two (the baselines)
FIT_INPUTS = ("fit input, memory", "fit input, disk")
CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "maskpair-bench"
COPY_POOL_BYTES = 256 * 2**20  # the copy bounds copy from this much precomputed data: well beyond the LLC
TIMED_CHUNKS = 10
MB, GB = 2**20, 2**30
READS_FILES = ("naive", "streaming", "augmented compact")  # 10x slower: time fewer pairs
CACHING = ("cached", "cached compact", "disk compact", "fit input, memory", "fit input, disk", "tf.data cache")
# in the baseline: these import TensorFlow (augmented compact through train.augmentation's module)
USES_TENSORFLOW = ("fit input, memory", "fit input, disk", "tf.data decode", "tf.data cache", "augmented compact")
DATA_LOADER_ROWS = ("cached", "cached compact", "disk compact", "streaming", "augmented compact", *FIT_INPUTS)
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


def augmented_batches(data_dir, batch_size, description, disk_dir):
    """`get_batch(compact=True)` with training's augmentation (`train.augmentation` of the default TrainConfig:
    paired flips, rotation, zoom, shift, intensity jitter, 160 px crops), from the in-memory cache: what the
    train split of a default run is fed at, in numpy (float32 images, so "% of copy bound" is a lower bound)."""
    from maskpair.training.config import TrainConfig
    from maskpair.training.train import augmentation

    data = DataLoader(data_dir, batch_size=batch_size, split=(1.0, 0.0, 0.0), augment=augmentation(TrainConfig()),
                      progress=False)
    return data.get_batch("train", compact=True), data.steps_per_epoch("train")


def as_fit_consumes(dataset):
    """Endless (range(batch size),) items, one per batch of an endless `dataset`, taken as `model.fit` takes them:
    inside a `tf.function`, where the batch stays a tensor (Keras' train_function calls next(iterator) there)."""
    tf = legacy_keras.import_tensorflow()
    iterator = iter(dataset)

    @tf.function
    def step(batches):
        images, _ = next(batches)
        return tf.shape(images)[0]

    while True:
        yield (range(int(step(iterator))),)


def fit_input_batches(cache):
    """Factory of `DataLoader(cache=...).tf_dataset("train")`, the tensors `fit.py` trains on (no augmentation:
    assembled in the tf.data graph from the cache's buffers), consumed as fit consumes them."""
    def batches(data_dir, batch_size, description, disk_dir):
        data = data_loader(data_dir, batch_size, cache, disk_dir)
        return as_fit_consumes(data.tf_dataset("train")), data.steps_per_epoch("train")

    return batches


def tf_data_batches(cache: bool):
    """Factory of idiomatic tf.data, repeated and consumed as fit consumes it (the last batch of an epoch may be
    short). Without `cache`, the files are decoded every epoch in a parallel map (shuffled paths -> decode ->
    float32 image + one-hot -> batch -> prefetch); with it, decoded once into float32 image + one-hot and kept by
    `.cache()` (-> shuffle -> batch -> prefetch: 16 bytes a pixel held, the issue's ~5 GB at 5,000 pairs)."""
    def batches(data_dir, batch_size, description, disk_dir):
        tf = legacy_keras.import_tensorflow()
        pairs = list(pair_files(data_dir).values())
        n_classes, channels = description.n_classes, description.n_channels

        def decode(image_path, mask_path):
            image = tf.io.decode_png(tf.io.read_file(image_path), channels=channels)
            mask = tf.numpy_function(lambda path: np.load(path.decode()).astype(np.uint8), [mask_path], tf.uint8)
            return tf.cast(image, tf.float32) / 255.0, tf.one_hot(mask, n_classes, dtype=tf.float32)

        paths = tf.data.Dataset.from_tensor_slices(tuple([str(p) for p in column] for column in zip(*pairs)))
        if cache:
            dataset = paths.map(decode, num_parallel_calls=tf.data.AUTOTUNE).cache().shuffle(len(pairs), seed=0)
        else:
            dataset = paths.shuffle(len(pairs), seed=0).map(decode, num_parallel_calls=tf.data.AUTOTUNE)
        dataset = dataset.batch(batch_size).repeat().prefetch(tf.data.AUTOTUNE)
        return as_fit_consumes(dataset), -(-len(pairs) // batch_size)

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
    "streaming": loader_batches(False, compact=False),
    "augmented compact": augmented_batches,
    "fit input, memory": fit_input_batches(True),
    "fit input, disk": fit_input_batches("disk"),
    "tf.data decode": tf_data_batches(cache=False),
    "tf.data cache": tf_data_batches(cache=True),
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
        from maskpair.training import train  # noqa: F401 (TensorFlow and the training modules: part of the baseline)
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


def memory_epoch(data_dir: Path) -> dict:
    """The in-memory cache's peak: `DataLoader(cache=True)` built, then one epoch of `get_batch` at B=16; VmHWM,
    the peak resident size `/usr/bin/time` reports, against the uint8 bytes of the pairs it holds."""
    base_rss = status_kb("VmRSS") * 1024
    data = data_loader(data_dir, 16, True, None)
    batches = data.get_batch("train")
    for _ in range(data.steps_per_epoch("train")):
        next(batches)
    pairs = [data.raw_pair(name) for name in data.names]
    return {"peak_rss": status_kb("VmHWM") * 1024, "base_rss": base_rss,
            "data_bytes": sum(image.nbytes + labels.nbytes for image, labels in pairs), "load": os.getloadavg()[0]}


FIT_PAIRS = {"train": 320, "val": 64, "test": 16}  # the whole-fit row's split: 20 steps a pass at B=16
FIT_EPOCHS = 3


def whole_fit(data_dir: Path) -> dict:
    """`train.train_model` as `maskpair train` runs it (default TrainConfig: augmentation, 160 px crops, in-memory
    cache) at batch 16, on FIT_PAIRS of a generated set, one pass an epoch: per epoch, the share of its steps'
    time spent waiting for the input (`fit.input_wait_share`, metrics.json's input_wait_share) and the median
    step."""
    from maskpair.training import fit, train
    from maskpair.training.config import TrainConfig

    names = sorted(pair_files(data_dir), key=int)
    ends = np.cumsum(list(FIT_PAIRS.values()))
    splits = {split: names[end - size : end] for (split, size), end in zip(FIT_PAIRS.items(), ends)}
    splits["excluded"] = names[ends[-1]:]  # explicit splits name every example
    config = TrainConfig(batch_size=16, epochs=FIT_EPOCHS, passes_per_epoch=1)
    data = DataLoader(data_dir, config.batch_size, config.seed, splits, augment=train.augmentation(config),
                      progress=False)
    _, report = train.train_model(data, config, None)
    steps = data.steps_per_epoch("train")
    epochs = []
    for epoch in range(report["epochs_run"]):
        part = {key: report[key][epoch * steps : (epoch + 1) * steps]
                for key in ("batch_ready_times", "step_starts", "step_seconds")}
        warmup = fit.WARMUP_STEPS if epoch == 0 else 0
        epochs.append({"input_wait_share": fit.input_wait_share(part, warmup),
                       "median_step_s": statistics.median(part["step_seconds"][warmup:])})
    return {"epochs": epochs, "steps_per_epoch": steps, "input_wait_share": fit.input_wait_share(report),
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


def best_tf_data(results: dict, data: str, batch_size: int) -> dict:
    """The faster of tf.data decode and tf.data cache (where the cache fits) for this data and B."""
    rows = [results[(data, batch_size, name)] for name in TF_DATA if "skipped" not in results[(data, batch_size, name)]]
    return max(rows, key=lambda row: row["pairs_per_s"])


def format_table(results: dict) -> str:
    """Markdown table; ratios against the faster tf.data pipeline and the copy bound of the same data and B."""
    lines = ["| data | B | loader | pairs/s | × tf.data | % of copy bound | peak RSS MB (above base) "
             "| peak RssAnon MB (above base) | open s | first batch s | load |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (data, batch_size, name), row in results.items():
        if "skipped" in row:
            lines.append(f"| {data} | {batch_size} | {name} | {row['skipped']} | | | | | | | |")
            continue
        rate = row["pairs_per_s"]
        bound = LOADERS[name]
        versus_tf = rate / best_tf_data(results, data, batch_size)["pairs_per_s"]
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


def format_memory(memory: dict) -> str:
    return "\n".join(f"in-memory cache of {data}: peak RSS {row['peak_rss'] / MB:,.0f} MB over construction and one "
                     f"epoch of get_batch (B=16) = {row['peak_rss'] / row['data_bytes']:.2f} x the {row['data_bytes'] / MB:,.0f} "
                     f"MB of uint8 pairs it holds (interpreter and imports {row['base_rss'] / MB:,.0f} MB; load "
                     f"{row['load']:.1f})" for data, row in memory.items())


def format_fit(data: str, row: dict) -> str:
    lines = [f"Whole fit (train.train_model, default TrainConfig at B=16: augmentation, 160 px crops, in-memory cache; "
             f"{FIT_PAIRS['train']} train pairs of {data}, {row['steps_per_epoch']} steps an epoch, load "
             f"{row['load']:.1f}):",
             "| epoch | input wait, share of the epoch's steps | median step s |", "|---:|---:|---:|"]
    lines += [f"| {k + 1} | {100 * epoch['input_wait_share']:.1f}% | {epoch['median_step_s']:.2f} |"
              for k, epoch in enumerate(row["epochs"])]
    lines.append(f"whole run (metrics.json's input_wait_share): {100 * row['input_wait_share']:.1f}%")
    return "\n".join(lines)


def target_checks(results: dict, generated: list, memory: dict, needed: dict, batch_size: int = 16) -> list[str]:
    """The issues' targets (steady state, B=16, each generated set), PASS/FAIL with the numbers compared."""
    row = lambda data, name: results[(data, batch_size, name)]  # noqa: E731
    rate = lambda data, name: row(data, name)["pairs_per_s"]  # noqa: E731
    anon = lambda data, name: row(data, name)["anon_above_base"] / MB  # noqa: E731
    checks, notes = [], []  # (label, measured, limit, pass when measured >= limit)
    for data in generated:
        best = best_tf_data(results, data, batch_size)
        best_name = next(name for name in TF_DATA if row(data, name) is best)
        cached = "skipped" not in row(data, "tf.data cache")
        for name in FIT_INPUTS:
            checks += [(f"{data}: {name} / {best_name} pairs/s", rate(data, name) / best["pairs_per_s"], 2.0, True),
                       (f"{data}: {name} / copy bound u8", rate(data, name) / rate(data, "copy bound u8"), 0.5, True)]
            if cached:
                checks.append((f"{data}: {name} / tf.data cache RssAnon above base",
                               anon(data, name) / anon(data, "tf.data cache"), 0.25, False))
            else:
                notes.append(f"{data}: {name} holds {anon(data, name):,.0f} MB above base; tf.data cache did not fit "
                             f"(needs {needed[data] / MB:,.0f} MB: {anon(data, name) * MB / needed[data]:.2f} of it); "
                             f"tf.data decode holds {anon(data, 'tf.data decode'):,.0f} MB")
        checks += [
            (f"{data}: disk compact / copy bound u8", rate(data, "disk compact") / rate(data, "copy bound u8"), 0.5, True),
            (f"{data}: disk compact RssAnon above base, MB", anon(data, "disk compact"), 300, False),
            (f"{data}: disk cache reopen (DataLoader constructor), s", row(data, "disk compact")["open_s"], 2.0, False),
        ]
        if data in memory and memory[data]["data_bytes"] >= 256 * MB:  # smaller: the interpreter dominates
            checks.append((f"{data}: in-memory cache peak RSS / uint8 pairs",
                           memory[data]["peak_rss"] / memory[data]["data_bytes"], 1.3, False))
    lines = [f"{'PASS' if (value >= limit) == at_least else 'FAIL'}  {label} = {value:,.2f}  "
             f"(target {'>=' if at_least else '<='} {limit:g})" for label, value, limit, at_least in checks]
    return lines + [f"note  {note}" for note in notes]


# ---------------------------------------------------------------- command line


def measure_all(datasets: dict, rounds: int, timed_pairs: int, warmup_cap: int, disk_dirs: dict, needed: dict) -> dict:
    """Every (data, batch size, loader), each in its own subprocess, `rounds` times; the best round of each.

    The float32-cache tf.data is skipped where its cache would not fit in FITS_SHARE of the available memory (a
    row says so, with the bytes)."""
    runs, skipped = {}, {}
    for data in datasets:
        available = mem_available()
        if needed[data] > FITS_SHARE * available:
            skipped[data] = (f"does not fit: float32 cache needs {needed[data] / GB:.1f} GB, "
                             f"{available / GB:.1f} GB available")
    for round_ in range(rounds):
        for data, (data_dir, batch_sizes) in datasets.items():
            for batch_size in batch_sizes:
                for name in LOADERS:
                    if name == "tf.data cache" and data in skipped:
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
                        "1 round, no whole fit")
    parser.add_argument("--pairs", type=int, nargs="+", help="sizes of the generated sets (default 5000 20000; "
                        "64 with --quick)")
    parser.add_argument("--timed-pairs", type=int, help="pairs timed per in-memory configuration (default 8000, "
                        "a tenth for loaders that read files; 64 with --quick)")
    parser.add_argument("--rounds", type=int, help="measure the table this many times (default 2; 1 with --quick)")
    parser.add_argument("--no-fit", action="store_true", help="leave out the whole fit (~10 min on 2 busy cores)")
    parser.add_argument("--data-dir", type=Path, default=EXAMPLE_DATA_DIR, help="the real pairs")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_ROOT, help="where generated sets are kept")
    parser.add_argument("--measure", nargs=6, help=argparse.SUPPRESS)  # internal: one configuration
    parser.add_argument("--build", nargs=2, help=argparse.SUPPRESS)  # internal: one disk cache's first open
    parser.add_argument("--memory-epoch", type=Path, help=argparse.SUPPRESS)  # internal: the in-memory cache's peak
    parser.add_argument("--whole-fit", type=Path, help=argparse.SUPPRESS)  # internal: the fit at B=16
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
    if args.memory_epoch:
        print(json.dumps(memory_epoch(args.memory_epoch)))
        return 0
    if args.whole_fit:
        print(json.dumps(whole_fit(args.whole_fit)))
        return 0
    sizes = args.pairs or ([64] if args.quick else [5000, 20000])
    rounds = args.rounds or (1 if args.quick else 2)
    real = real_dataset(args.data_dir)
    datasets = {f"{len(pair_files(real))} real": (real, [16] if args.quick else [4, 16])}
    for n_pairs in sizes:
        generated = generate_dataset(real, args.cache_dir / f"{real.name}-{n_pairs}-seed0", n_pairs)
        datasets[f"{n_pairs:,} generated"] = (generated, [16])
    disk_dirs = {data: args.cache_dir / f"{data_dir.name}.cache" for data, (data_dir, _) in datasets.items()}
    needed = {data: float_cache_bytes(data_dir) for data, (data_dir, _) in datasets.items()}
    load_before = os.getloadavg()[0]
    builds, memory = {}, {}
    for data, (data_dir, _) in datasets.items():
        builds[data] = run_in_subprocess("--build", data_dir, disk_dirs[data])
        print(f"  built the disk cache of {data} (load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
    for data, (data_dir, _) in list(datasets.items())[1:]:
        memory[data] = run_in_subprocess("--memory-epoch", data_dir)
        print(f"  measured the in-memory cache of {data} (load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
    results = measure_all(datasets, rounds, args.timed_pairs or (64 if args.quick else 8000),
                          2 if args.quick else 10, disk_dirs, needed)
    fit_data = next((data for data, (data_dir, _) in datasets.items()
                     if len(pair_files(data_dir)) >= sum(FIT_PAIRS.values())), None)
    print(format_table(results), flush=True)  # before the whole fit, so that nothing measured is lost if it fails
    print()
    print(format_builds(builds))
    print(format_memory(memory), flush=True)
    fitted = None if args.quick or args.no_fit or fit_data is None else run_in_subprocess(
        "--whole-fit", datasets[fit_data][0])
    if fitted:
        print()
        print(format_fit(fit_data, fitted))
    print("\nTargets (steady state, B=16; fit input = DataLoader(cache=...).tf_dataset, as model.fit takes it):")
    print("\n".join(target_checks(results, list(datasets)[1:], memory, needed)))
    print(f"\n{os.cpu_count()} CPUs, 1-min load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after; "
          f"numpy {np.__version__}, python {sys.version.split()[0]}; best of {rounds} round(s); "
          f"generated sets under {args.cache_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
