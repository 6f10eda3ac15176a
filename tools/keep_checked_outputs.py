"""Execute notebooks in place from notebooks/ and keep only the outputs nbval compares.

Usage: python tools/keep_checked_outputs.py notebooks/03_batch_check.ipynb [...]
Cells whose first line is `# NBVAL_CHECK_OUTPUT` keep their outputs and execution count; every other
output, count and run metadata is stripped, so commits show only the deterministic facts the notebooks assert.
"""
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

MARK = "# NBVAL_CHECK_OUTPUT"


def strip_unchecked(notebook) -> None:
    """Drop outputs and counts of unchecked cells and per-run metadata."""
    notebook.metadata.pop("widgets", None)
    notebook.metadata.pop("papermill", None)
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("papermill", None)
        if cell.cell_type != "code":
            continue
        if not cell.source.startswith(MARK):
            cell.outputs = []
            cell.execution_count = None  # nbval treats a checked cell without a count as never run


def main(paths) -> int:
    for path in map(Path, paths):
        notebook = nbformat.read(path, as_version=4)
        NotebookClient(notebook, timeout=1800, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        strip_unchecked(notebook)
        nbformat.write(notebook, path)
        print(f"{path}: executed, unchecked outputs stripped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
