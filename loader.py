"""The loader, as the project's design names it: a thin face over `maskpair.data` (the package holds the code).

    import loader
    data = loader.DataLoader("data/spine-mri", batch_size=4, seed=0, cache=True)

    python loader.py check DATA_DIR     # = maskpair check DATA_DIR
    python loader.py fetch [DEST]       # = maskpair fetch [DEST]

It is the one top-level module the project installs: a `loader.py` of your own in the current folder (or earlier
on sys.path) is imported instead of this one; `maskpair.DataLoader` always reaches the package.
"""
import sys

from maskpair.data import (  # noqa: F401
    IGNORE_INDEX,
    SET_ASIDE,
    SPLITS,
    Augment,
    DataLoader,
    DatasetDescription,
    check_dataset,
    describe,
    fetch_example_data,
    fitting_batch_size,
    kfold_splits,
    natural_key,
    pair_files,
    read_pair,
    split_names,
)
from maskpair.errors import DataError  # noqa: F401

if __name__ == "__main__":
    from maskpair.cli import main

    if len(sys.argv) < 2 or sys.argv[1] not in ("check", "fetch", "-h", "--help"):
        sys.exit("usage: python loader.py check DATA_DIR | fetch [DEST] [--url URL]  (everything else: maskpair --help)")
    sys.exit(main(sys.argv[1:]))
