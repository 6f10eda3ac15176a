"""Execute the project's notebooks with papermill: `notebooks` runs all of them in order into outputs/.

Every run starts its kernel in notebooks/ (as nbval does), so relative paths behave the same both ways.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent
NOTEBOOK_DIR = PROJECT_DIR / "notebooks"


def notebook_paths() -> list[Path]:
    """The notebook sequence, in order (01_…, 02_…)."""
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def execute_notebook(notebook: Path, output: Path, parameters: dict) -> None:
    """Run one notebook with papermill into `output`; a failing cell raises and leaves `output` with the error."""
    import papermill

    output.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(notebook), str(output), parameters=parameters, cwd=str(NOTEBOOK_DIR), progress_bar=False,
        log_output=False, kernel_name="python3",
    )


def run_notebooks(data_dir: Path, out_dir: Path) -> int:
    """Execute every notebook into out_dir/<notebook>, each writing its results to out_dir/<stem>/."""
    for notebook in notebook_paths():
        output = out_dir / notebook.name
        print(f"running {notebook.name} -> {output}", flush=True)
        try:
            execute_notebook(notebook, output, {"data_dir": str(data_dir), "output_dir": str(out_dir / notebook.stem)})
        except Exception as err:  # papermill's PapermillExecutionError carries the failing cell
            print(f"{notebook.name} failed: {type(err).__name__}: {str(err).strip().splitlines()[-1]}\n"
                  f"  the executed notebook with the error is {output}", file=sys.stderr)
            return 1
    print(f"done: executed notebooks and their results are in {out_dir}/")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="run.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    notebooks = commands.add_parser("notebooks", help="execute every notebook in order into --out")
    notebooks.add_argument("--data-dir", type=Path, default=PROJECT_DIR / "data" / "spine-mri")
    notebooks.add_argument("--out", type=Path, default=PROJECT_DIR / "outputs")
    args = parser.parse_args(argv)
    if args.command == "notebooks":
        return run_notebooks(args.data_dir.resolve(), args.out.resolve())
    return 2


if __name__ == "__main__":
    sys.exit(main())
