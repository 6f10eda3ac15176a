"""Execute notebooks (papermill, kernel in notebooks/) and keep in the committed notebook only the outputs nbval
compares.

Usage: python tools/keep_checked_outputs.py notebooks/03_batch_check.ipynb [...] [-p NAME VALUE ...]
Cells whose first line is `# NBVAL_CHECK_OUTPUT` get the executed outputs and execution count; every other
output, count and run metadata is stripped, so commits show only the deterministic facts the notebooks assert.
`-p` passes parameters for this run only (e.g. `-p epochs 2` for notebook 04, whose checked cells do not depend
on the number of epochs); the committed parameters cell is left as it is.
"""
import argparse
import sys
import tempfile
from pathlib import Path

import nbformat

from maskpair.cli import notebooks as notebooks_cli

MARK = "# NBVAL_CHECK_OUTPUT"


def keep_checked(source, executed) -> None:
    """Copy outputs of checked cells from `executed` into `source` (matched by cell id); strip everything else."""
    source.metadata.pop("widgets", None)
    source.metadata.pop("papermill", None)
    ran = {cell.get("id"): cell for cell in executed.cells}
    for cell in source.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("papermill", None)
        if cell.cell_type != "code":
            continue
        if cell.source.startswith(MARK):
            cell.outputs, cell.execution_count = ran[cell.get("id")].outputs, ran[cell.get("id")].execution_count
        else:
            cell.outputs = []
            cell.execution_count = None  # nbval treats a checked cell without a count as never run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    args = parser.parse_args(argv)
    parameters = {name: notebooks_cli.parse_value(value) for name, value in args.p}
    for path in args.notebooks:
        with tempfile.TemporaryDirectory() as scratch:
            output = Path(scratch) / path.name
            notebooks_cli.execute_notebook(path.resolve(), output, parameters)
            executed = nbformat.read(output, as_version=4)
        source = nbformat.read(path, as_version=4)
        keep_checked(source, executed)
        nbformat.write(source, path)
        print(f"{path}: executed, unchecked outputs stripped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
