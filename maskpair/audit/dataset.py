"""Running the audit over a data folder (or arrays in memory): every pair measured, in worker processes for
larger datasets, then judged together (`report.build_report`)."""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from itertools import repeat

import numpy as np

from maskpair.audit.alignment import fit_measures, full_scores, oriented_edges, reduced
from maskpair.audit.content import class_components, digest
from maskpair.audit.domain import anatomical_order, checked_options, edge_margins
from maskpair.audit.report import FLAG_CODES, build_report, data_key, flagged
from maskpair.data.description import IGNORE_INDEX
from maskpair.data.files import dataset_files
from maskpair.data.loader import DataLoader
from maskpair.data.reading import read_pair
from maskpair.errors import DataError

                        # character, so lines are cut to the thumbnail's width)
POOL_FROM = 64          # pairs from which audit_dataset measures them in worker processes
CHUNK = 16              # pairs per worker task


def measure_pair(image, mask, labels, options: dict, edges=None) -> dict:
    """Everything the audit needs of one pair, compact (no full-size arrays kept). edges: the `oriented_edges`
    of the image as `alignment.reduced` gives it, if the caller has them."""
    mask = np.asarray(mask)
    small_image, small_mask, factor = reduced(image, mask)
    labelled = (mask != 0) & (mask != IGNORE_INDEX)
    measures = {"classes": class_components(mask, labels), "image_digest": digest(image),
                "mask_digest": digest(mask), "labelled": bool(labelled.any()),
                "foreground": int(np.count_nonzero(labelled)),
                "present": [int(v) for v in np.flatnonzero(np.bincount(mask.ravel(), minlength=256)[:IGNORE_INDEX])],
                "margins": edge_margins(mask),
                "fit": fit_measures(oriented_edges(small_image) if edges is None else edges, small_mask, factor)}
    if options.get("alternating") and measures["labelled"]:
        measures["order"] = anatomical_order(image, mask, labels, tuple(options["alternating"]))
    return measures



def _progress_callback(progress, total):
    """A callable(n_done) from progress: None (auto: a bar from 200 examples), bool, or callable(done, total)."""
    if callable(progress):
        return lambda done: progress(done, total)
    if progress is None:
        progress = total >= 200
    if not progress:
        return lambda done: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="auditing", unit="pair")
    return lambda done: (bar.update(done - bar.n), bar.close() if done == total else None)



def audit_arrays(names, images, masks, labels, options: dict | None = None, progress=None, edges=None) -> dict:
    """Audit in-memory pairs: images (H, W) or (H, W, C) uint8/float in [0, 1], masks (H, W) class indices with
    IGNORE_INDEX for ignore pixels; labels: class names by index; options: the description's "audit" switches.

    edges: the `alignment.oriented_edges` of each image (as `alignment.reduced` gives it), when the caller
    already has them (they depend on images only).
    """
    options = checked_options(options, tuple(labels))
    tick = _progress_callback(progress, len(names))
    measures = []
    for i in range(len(names)):
        measures.append(measure_pair(images[i], masks[i], labels, options, None if edges is None else edges[i]))
        tick(i + 1)
    def edges_of(i):
        return oriented_edges(reduced(images[i], masks[i])[0]) if edges is None else edges[i]

    def mask_of(i):
        return reduced(images[i], masks[i])[1]

    return build_report(names, measures, labels, options,
                        lambda requests, centres: full_scores(requests, centres, edges_of, mask_of))



def open_dataset(data_dir):
    """A streaming loader over data_dir: the description and the pairs, every header checked, no pixel kept."""
    return DataLoader(data_dir, batch_size=1, cache=False, progress=False)



def _measure_or_problems(pair_paths, description, options):
    """measure_pair of one pair read from its files, or the DataError's problem lines."""
    try:
        image, mask = read_pair(*pair_paths, description)
    except DataError as err:
        return err.problems
    return measure_pair(image, mask, description.classes, options)



def _measure_chunk(chunk, description, options):
    """_measure_or_problems of each pair in a chunk (one worker task)."""
    return [_measure_or_problems(paths, description, options) for paths in chunk]



def worker_context():
    """How worker processes start: forked (instantly, and without running the caller's script again, which a
    script without an `if __name__ == "__main__"` guard would not survive) unless other threads run here (a
    notebook kernel, the review UI's background audit): a fork copies no thread but may copy a lock one of them
    holds, so then from a fork server that has imported this module once."""
    if threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["maskpair.audit"])
    return context



def worker_pool(n_pairs: int):
    """A process pool, one worker per core (at most 8), from POOL_FROM pairs; below that (or on one core) a
    context holding None: the pairs are measured in this process."""
    workers = min(len(os.sched_getaffinity(0)), 8)
    if n_pairs < POOL_FROM or workers < 2:
        return contextlib.nullcontext()
    return ProcessPoolExecutor(workers, mp_context=worker_context())



def measure_dataset(data, options, tick, pool) -> list[dict]:
    """measure_pair of every pair, in CHUNK-pair tasks of the pool (or here, with pool None); DataError lists
    every pair that cannot be read."""
    paths = [data.pairs[name] for name in data.names]
    if pool is None:
        parts = ([_measure_or_problems(pair_paths, data.description, options)] for pair_paths in paths)
    else:
        chunks = [paths[k:k + CHUNK] for k in range(0, len(paths), CHUNK)]
        parts = pool.map(_measure_chunk, chunks, repeat(data.description), repeat(options))
    measures = []
    for part in parts:
        measures += part
        tick(len(measures))
    problems = [line for found in measures if isinstance(found, list) for line in found]
    if problems:
        raise DataError(problems)
    return measures


def _full_scores_from_files(requests, paths, description, centres):
    """full_scores of the requests, each file read at most once (one worker task): the pairs scored whole, the
    masks of their swap partners alone."""
    # a partner's mask read with its image: read_pair applies the ROI and max_size as for every pair
    pair = lru_cache(maxsize=None)(lambda i: reduced(*read_pair(*paths[i], description)))
    return full_scores(requests, centres, lambda i: oriented_edges(pair(i)[0]), lambda i: pair(i)[1])


def full_scorer(data, pool):
    """score_in_full(requests, centres) for a dataset's pairs (see full_scores), in tasks of CHUNK images."""

    def score_in_full(requests: dict, centres) -> dict:
        items = sorted(requests.items())
        groups = [dict(items[k:k + CHUNK]) for k in range(0, len(items), CHUNK)]
        paths = [{k: data.pairs[data.names[k]]
                  for k in set(group) | {j for wanted in group.values() for j in wanted if not isinstance(j, str)}}
                 for group in groups]
        found = {}
        for part in (map if pool is None else pool.map)(_full_scores_from_files, groups, paths,
                                                         repeat(data.description), repeat(centres)):
            found.update(part)
        return found

    return score_in_full



def audit_dataset(data_dir, progress=None, options: dict | None = None) -> dict:
    """Audit every pair under data_dir; returns {"examples": [{"name", "flags", measures...}], ...}.

    options: the domain checks to run (the description's "audit" switches unless given, {} for none).
    progress: None (a bar from 200 pairs), True/False, or a callable(done, total), called as pairs are measured.
    Raises DataError listing every pair that cannot be read.
    """
    data = open_dataset(data_dir)
    options = checked_options(data.description.audit if options is None else options, data.labels)
    with worker_pool(len(data.names)) as pool:
        measures = measure_dataset(data, options, _progress_callback(progress, len(data.names)), pool)
        report = build_report(list(data.names), measures, data.labels, options, full_scorer(data, pool))
    report["data_dir"] = str(data_dir)
    report["key"] = data_key(data_dir, dataset_files(data_dir), options)
    return report


def flagged_by_audit(data_dir, codes) -> list[str]:
    """Names of the examples the audit flags with any of the flag `codes` (e.g. ["empty_mask"])."""
    if isinstance(codes, str) or not set(codes) <= set(FLAG_CODES):
        raise ValueError(f"flag codes must be a list drawn from {sorted(FLAG_CODES)}, got {codes!r}")
    report = audit_dataset(data_dir, progress=False)
    return [name for code in codes for name in flagged(report, code)]
