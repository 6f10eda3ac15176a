"""Large images: reading a 2592x1936 pair (JPEG image, PNG mask) at its own size and with "max_size": 1024, side by
side with what a user would write instead, and the memory each store holds for 16 such pairs.

    python bench/bench_large.py             # 16 generated ISIC-like pairs of 2592x1936, 3 rounds

Reading rows time every pair of the set once per round (one thread) and keep each row's best round, as ms per
pair; "x ours" is the row's time over maskpair's at the same size. Store rows run in their own subprocess:
`DataLoader(cache=...)` construction time and peak RssAnon above the subprocess's baseline (what the process
really holds; the disk cache's mapped pages are not anonymous). The data are written once under
~/.cache/maskpair-bench/large-16 (images: smooth noise with a darker disc, JPEG quality 90; masks: the disc, 0/255).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from bench_loader import CACHE_ROOT, AnonPeak, status_kb
from PIL import Image

from maskpair.data.description import DatasetDescription, read_declared
from maskpair.data.files import pair_files
from maskpair.data.loader import DataLoader
from maskpair.data.reading import read_pair

SIZE = (1936, 2592)  # (H, W) of the ISIC 2018 images the issue names
MAX_SIZE = 1024
MB = 2**20


def generate(dest: Path, n: int = 16, seed: int = 0) -> Path:
    """ISIC-like pairs: ISIC2018_Task1-2_Training_Input/ISIC_N.jpg + ..._GroundTruth/ISIC_N_segmentation.png."""
    if (dest / ".complete").is_file():
        return dest
    inputs, truth = dest / "ISIC2018_Task1-2_Training_Input", dest / "ISIC2018_Task1_Training_GroundTruth"
    inputs.mkdir(parents=True, exist_ok=True)
    truth.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    height, width = SIZE
    rows, cols = np.mgrid[:height, :width]
    for k in range(n):
        coarse = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC)).astype(np.int16)
        image += rng.integers(-10, 10, image.shape, dtype=np.int16)
        centre, radius = (height / 2 + rng.uniform(-200, 200), width / 2 + rng.uniform(-300, 300)), rng.uniform(300, 700)
        lesion = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 < radius**2
        image[lesion] -= 60
        name = f"ISIC_{14568 + k:07d}"
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(inputs / f"{name}.jpg", quality=90)
        Image.fromarray(lesion.astype(np.uint8) * 255).save(truth / f"{name}_segmentation.png")
    (dest / "dataset.json").write_text(json.dumps({
        "name": "ISIC-like, 2592x1936", "images": "ISIC2018_Task1-2_Training_Input/{name}.jpg",
        "masks": "ISIC2018_Task1_Training_GroundTruth/{name}_segmentation.png",
        "channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "lesion": 255}}, indent=1))
    reduced = dest.with_name(dest.name + f"-max{MAX_SIZE}")  # the same files, read with max_size
    reduced.mkdir(exist_ok=True)
    for folder in (inputs, truth):
        (reduced / folder.name).unlink(missing_ok=True)
        (reduced / folder.name).symlink_to(folder)
    keys = json.loads((dest / "dataset.json").read_text())
    (reduced / "dataset.json").write_text(json.dumps({**keys, "max_size": MAX_SIZE}, indent=1))
    (dest / ".complete").touch()
    return dest


# ---------------------------------------------------------------- reading one pair, four ways


def naive_own(image_path, mask_path, _):
    """What a user writes: decode both, the mask's 0/255 as 0/1."""
    return np.asarray(Image.open(image_path).convert("RGB")), np.asarray(Image.open(mask_path)) // 255


def naive_reduced(image_path, mask_path, size):
    """Decode at full size, then PIL's area filter (image) and nearest (mask)."""
    height, width = size
    image = Image.open(image_path).convert("RGB").resize((width, height), Image.BOX)
    mask = Image.open(mask_path).resize((width, height), Image.NEAREST)
    return np.asarray(image), np.asarray(mask) // 255


def skimage_reduced(image_path, mask_path, size):
    """Decode at full size, then scikit-image's resize with anti-aliasing (image) and order 0 (mask)."""
    from skimage.transform import resize

    image = resize(np.asarray(Image.open(image_path).convert("RGB")), size, anti_aliasing=True, preserve_range=True)
    mask = resize(np.asarray(Image.open(mask_path)), size, order=0, anti_aliasing=False, preserve_range=True)
    return image.astype(np.uint8), (mask // 255).astype(np.uint8)


def reading_rows(data_dir: Path, rounds: int) -> dict:
    """{row: best ms per pair}."""
    declared = read_declared(data_dir)
    own = DatasetDescription(**declared)
    reduced = DatasetDescription(**{**declared, "max_size": MAX_SIZE})
    pairs = list(pair_files(data_dir).values())
    size = read_pair(*pairs[0], reduced)[1].shape
    rows = {
        "maskpair read_pair, own size": lambda p: read_pair(*p, own),
        "PIL + numpy, own size": lambda p: naive_own(*p, None),
        f"maskpair read_pair, max_size {MAX_SIZE}": lambda p: read_pair(*p, reduced),
        f"PIL decode + resize (BOX), {MAX_SIZE}": lambda p: naive_reduced(*p, size),
        f"PIL decode + skimage resize (anti-aliasing), {MAX_SIZE}": lambda p: skimage_reduced(*p, size),
    }
    best = {row: float("inf") for row in rows}
    for _ in range(rounds):
        for row, read in rows.items():  # rows in turn, so a busy neighbour does not skew one row
            start = time.perf_counter()
            for pair in pairs:
                read(pair)
            best[row] = min(best[row], (time.perf_counter() - start) / len(pairs) * 1000)
    return best


# ---------------------------------------------------------------- stores (in a subprocess each)


def store_row(data_dir: Path, cache) -> dict:
    """Open a DataLoader with `cache`: seconds and peak RssAnon above this process's baseline."""
    cache = {"True": True, "False": False}.get(cache, cache)
    cache_dir = Path(str(data_dir) + ".cache")
    if cache == "disk":
        shutil.rmtree(cache_dir, ignore_errors=True)
    base = status_kb("RssAnon") * 1024
    anon = AnonPeak()
    start = time.perf_counter()
    data = DataLoader(data_dir, batch_size=1, cache=cache, workers=2, progress=False)
    seconds = time.perf_counter() - start
    held = sum(data.raw_pair(name)[0].nbytes + data.raw_pair(name)[1].nbytes for name in data.names)
    return {"open_s": seconds, "anon_above_base": anon.stop() - base, "pair_bytes": held,
            "size": "x".join(map(str, next(iter(data.sizes.values()))))}


def run_store_row(data_dir: Path, cache: str) -> dict:
    command = [sys.executable, __file__, "--store", str(data_dir), cache]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command[2:])} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--store", nargs=2, help=argparse.SUPPRESS)  # internal: one store row
    args = parser.parse_args(argv)
    if args.store:
        print(json.dumps(store_row(Path(args.store[0]), args.store[1])))
        return 0
    data_dir = generate(CACHE_ROOT / "large-16")
    load_before = os.getloadavg()[0]
    reading = reading_rows(data_dir, args.rounds)
    print(f"| reading one pair ({SIZE[1]}x{SIZE[0]} JPEG + PNG mask) | ms per pair | x ours |")
    print("|---|---:|---:|")
    ours = {"own": reading["maskpair read_pair, own size"], "reduced": reading[f"maskpair read_pair, max_size {MAX_SIZE}"]}
    for row, ms in reading.items():
        reference = ours["own"] if "own size" in row else ours["reduced"]
        print(f"| {row} | {ms:.0f} | {ms / reference:.2f} |")
    print("\n| store of 16 pairs | size kept | open s | peak RssAnon above base, MB | pairs' bytes, MB |")
    print("|---|---|---:|---:|---:|")
    for cache in ("True", "disk", "False"):
        for folder, kept in ((data_dir, "own size"), (data_dir.with_name(data_dir.name + f"-max{MAX_SIZE}"),
                                                      f"max_size {MAX_SIZE}")):
            found = run_store_row(folder, cache)
            label = f"DataLoader(cache={cache if cache != 'disk' else repr(cache)}), {kept}"
            print(f"| {label} | {found['size']} | {found['open_s']:.2f} | {found['anon_above_base'] / MB:.0f} | "
                  f"{found['pair_bytes'] / MB:.0f} |")
    print(f"\n{os.cpu_count()} CPUs, 1-min load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after; "
          f"best of {args.rounds} rounds; data in {data_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
