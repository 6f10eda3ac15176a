"""Splitting examples into train / val / test: seeded fractions, k folds, explicit lists."""
from __future__ import annotations

import warnings

import numpy as np

from maskpair.data.files import natural_key

SPLITS = ("train", "val", "test")
SET_ASIDE = "excluded"  # optional key of explicit splits: examples read and checked but never batched


def split_counts(n: int, fractions) -> list[int]:
    """Split n items by fractions with largest-remainder rounding (so 20 by 0.6/0.2/0.2 is 12/4/4)."""
    fractions = np.asarray(fractions, dtype=float)
    if len(fractions) != 3 or (fractions < 0).any() or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(f"split must be three non-negative fractions summing to 1, got {tuple(fractions)}")
    exact = fractions * n
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    return counts.tolist()



def split_names(names, fractions=(0.6, 0.2, 0.2), seed: int = 0) -> dict[str, list[str]]:
    """Seeded split into disjoint train/val/test lists; the same in any process for the same names and seed."""
    keys = {name: natural_key(name) for name in names}  # once per name: 20,000 names take 0.1 s per pass
    names = sorted(names, key=keys.__getitem__)  # independent of the caller's (or the file system's) order
    order = np.random.default_rng(seed).permutation(len(names))
    counts = split_counts(len(names), fractions)
    bounds = np.cumsum([0] + counts)
    return {
        split: sorted((names[i] for i in order[bounds[k] : bounds[k + 1]]), key=keys.__getitem__)
        for k, split in enumerate(SPLITS)
    }



def fitting_batch_size(splits: dict, batch_size: int) -> int:
    """`batch_size`, lowered if needed so that every non-empty split can fill a batch (small datasets); a
    warning says when and why, so a requested batch size is never replaced silently."""
    sizes = {split: len(splits[split]) for split in SPLITS if splits[split]}
    fitting = max(1, min([int(batch_size), *sizes.values()]))
    if fitting < batch_size:
        smallest = min(sizes, key=sizes.get)
        warnings.warn(f"batch size {batch_size} lowered to {fitting}: the {smallest} split has only "
                      f"{sizes[smallest]} examples", stacklevel=2)
    return fitting



def kfold_splits(names, n_folds: int = 5, fold: int = 0, seed: int = 0, val_fraction: float = 0.2):
    """Fold `fold` of a seeded k-fold: that fold is test; val is drawn from the rest; train is what remains."""
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold must be in 0..{n_folds - 1}, got {fold}")
    names = sorted(names, key=natural_key)
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    test = order[fold::n_folds]
    rest = [name for name in order if name not in test]
    val = rest[: round(val_fraction * len(names))]
    train = rest[len(val) :]
    return {split: sorted(group, key=natural_key) for split, group in zip(SPLITS, (train, val, test))}



def checked_splits(splits: dict, names) -> dict[str, list[str]]:
    """Validate explicit splits: keys train/val/test (and optionally SET_ASIDE), disjoint, together exactly
    `names`, so that an example left out of training is left out on purpose, never by a mistake in a list."""
    keys = SPLITS + ((SET_ASIDE,) if SET_ASIDE in splits else ())
    if set(splits) != set(keys):
        raise ValueError(f"explicit splits need exactly the keys {SPLITS} (and optionally {SET_ASIDE!r}), "
                         f"got {tuple(splits)}")
    listed = [name for split in keys for name in splits[split]]
    unknown = sorted(set(listed) - set(names), key=natural_key)
    repeated = sorted({name for name in listed if listed.count(name) > 1}, key=natural_key)
    left_out = sorted(set(names) - set(listed), key=natural_key)
    for problem, group in (("unknown", unknown), ("in more than one split", repeated), ("in no split", left_out)):
        if group:
            raise ValueError(f"explicit splits: examples {problem}: {', '.join(group)}")
    return {split: sorted(map(str, splits[split]), key=natural_key) for split in keys}
