"""Evidence for the loader's parallelism choices: first-epoch decode with threads vs processes, and batch
assembly in one thread vs split over threads (numpy releases the GIL).

    python bench/bench_parallel.py [--pairs 1000] [--data-dir DIR]    # default: the generated 5,000-pair set
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from bench_loader import CACHE_ROOT

from maskpair.data import batches
from maskpair.data.files import pair_files
from maskpair.data.inspection import describe
from maskpair.data.loader import DataLoader
from maskpair.data.reading import read_pair


def decode_rate(pairs, description, pool_class, workers) -> float:
    """Pairs/s for reading and validating every pair with `workers` workers of `pool_class`."""
    start = time.perf_counter()
    with pool_class(workers) as pool:
        # chunks, so the process pool is not dominated by per-pair pickling round trips
        for _ in pool.map(functools.partial(_read, description=description), pairs, chunksize=16):
            pass
    return len(pairs) / (time.perf_counter() - start)


def _read(paths, description):
    image, labels = read_pair(*paths, description)
    return image.shape  # return little: a process pool would otherwise pay to pickle the arrays back


def assembly_rate(data, names, threaded: bool, repeats: int = 60) -> float:
    """Median pairs/s of `batch_arrays` (cached) with the thread split forced on or off."""
    default, batches._ASSEMBLY_THREADS = batches._ASSEMBLY_THREADS, max(2, batches._ASSEMBLY_THREADS) if threaded else 1
    try:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            data.batch_arrays(names)
            times.append(time.perf_counter() - start)
    finally:
        batches._ASSEMBLY_THREADS = default
    return len(names) / statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--data-dir", type=Path, default=CACHE_ROOT / "spine-mri-5000-seed0",
                        help="default: bench_loader.py's generated 5,000-pair set")
    args = parser.parse_args(argv)
    pairs = list(pair_files(args.data_dir).values())[: args.pairs]
    description = describe(args.data_dir)
    cpus = os.cpu_count() or 1
    for paths in pairs:  # warm the page cache, so the first contender does not pay for the disk
        [path.read_bytes() for path in paths]
    print(f"decode {len(pairs)} pairs ({cpus} CPUs), pairs/s:")
    for label, pool_class, workers in (("1 thread", ThreadPoolExecutor, 1),
                                       (f"{cpus + 2} threads (loader default)", ThreadPoolExecutor, cpus + 2),
                                       (f"{cpus} processes", ProcessPoolExecutor, cpus)):
        print(f"  {label:<32}{decode_rate(pairs, description, pool_class, workers):8,.0f}")
    data = DataLoader(args.data_dir, batch_size=16, split=(1.0, 0.0, 0.0), progress=False)
    print("batch assembly (cached), pairs/s:")
    for batch_size in (4, 16):
        names = data.splits["train"][:batch_size]
        rates = {False: [], True: []}
        for threaded in (False, True) * 3:  # interleaved, so a busy neighbour hurts both alike
            rates[threaded].append(assembly_rate(data, names, threaded))
        print(f"  B={batch_size:<3} one thread {statistics.median(rates[False]):8,.0f}   "
              f"split over threads {statistics.median(rates[True]):8,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
