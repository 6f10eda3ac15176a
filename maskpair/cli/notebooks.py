"""`notebooks` and `sweep`: execute the notebooks with papermill, in order into an output folder, or one notebook
over a parameter grid with a table of every run's metrics.

Every notebook run starts its kernel in notebooks/ (as nbval does), so relative paths behave the same both ways.
"""
from __future__ import annotations

import ast
import csv
import io
import itertools
import json
import math
import os
import re
import statistics
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

# the notebooks live in the repository beside the package (an editable install, as `make env` makes)
NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"

def notebook_paths() -> list[Path]:
    """The notebook sequence, in order (01_…, 02_…)."""
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))



def kernel_log_path(output: Path) -> Path:
    """Where the kernel's own stderr of the run writing `output` goes: `<output>.stderr.log` beside it."""
    return output.with_name(output.name + ".stderr.log")



@contextmanager
def stderr_to(path: Path):
    """Point this process's stderr (file descriptor 2, which kernels inherit) at `path` while the block runs.

    A kernel's C++ libraries write to it directly (TensorFlow's start-up lines); they belong in a log file,
    not among this command's messages.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with path.open("w") as log:
            os.dup2(log.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)



def execute_notebook(notebook: Path, output: Path, parameters: dict) -> None:
    """Run one notebook with papermill into `output`; a failing cell raises and leaves `output` with the error.
    The kernel's stderr goes to `kernel_log_path(output)`. Ctrl-C stops the kernel and raises KeyboardInterrupt.

    papermill runs in a worker thread because in the main thread nbclient takes over SIGINT (to shut its kernel
    down), and a sweep went on to its next run as if Ctrl-C had never been pressed."""
    import papermill

    output.parent.mkdir(parents=True, exist_ok=True)
    failures = []

    def execute():
        try:
            papermill.execute_notebook(
                str(notebook), str(output), parameters=parameters, cwd=str(NOTEBOOK_DIR), progress_bar=False,
                log_output=False, kernel_name="python3",
            )
        except Exception as err:
            failures.append(err)

    with stderr_to(kernel_log_path(output)):
        worker = threading.Thread(target=execute, name="papermill", daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                worker.join(0.2)
        except KeyboardInterrupt:
            stop_child_processes()
            worker.join(10)
            raise
    if failures:
        raise failures[0]



def stop_child_processes(timeout: float = 5.0) -> None:
    """Terminate this process's children (the notebook's kernel), killing any still alive after `timeout` s."""
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        child.terminate()
    for child in psutil.wait_procs(children, timeout=timeout)[1]:
        child.kill()



def run_notebooks(data_dir: Path, out_dir: Path, parameters: dict | None = None) -> int:
    """Execute every notebook into out_dir/<notebook>, each writing its results to out_dir/<stem>/; `parameters`
    go to each notebook whose parameters cell defines them (e.g. {"epochs": 5} to notebook 04)."""
    for notebook in notebook_paths():
        output = out_dir / notebook.name
        own = {name: value for name, value in (parameters or {}).items() if name in notebook_parameters(notebook)}
        print(f"running {notebook.name} -> {output}" + (f" with {own}" if own else ""), flush=True)
        try:
            execute_notebook(notebook, output,
                             {**own, "data_dir": str(data_dir), "output_dir": str(out_dir / notebook.stem)})
        except KeyboardInterrupt:
            print(f"stopped (Ctrl-C) while running {notebook.name}", file=sys.stderr)
            return 130
        except Exception as err:  # papermill's PapermillExecutionError carries the failing cell
            print(f"{notebook.name} failed: {type(err).__name__}: {_last_line(err)}\n"
                  f"  the executed notebook with the error is {output}", file=sys.stderr)
            return 1
    print(f"done: executed notebooks and their results are in {out_dir}/")
    return 0



def parse_value(text: str):
    """A command-line parameter value as a Python literal (`3`, `0.5`, `True`, `"x"`), else the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text



def parameter_grid(params: list[list[str]]) -> list[dict]:
    """Every combination of `--param NAME VALUE...` options, in command-line order (the last name varies fastest)."""
    names = [name for name, *_ in params]
    if len(set(names)) != len(names):
        raise ValueError(f"a parameter is given twice: {', '.join(names)}")
    values = [[parse_value(v) for v in rest] for _, *rest in params]
    return [dict(zip(names, combination)) for combination in itertools.product(*values)]



def run_name(parameters: dict) -> str:
    """Folder name of one run: `fold-0_seed-1`, `decoder_filters-64.32.16` (only the swept values). Letters,
    digits and `._-` only: TensorFlow reads checkpoint paths as glob patterns, so `[`, `*`, `?` in a folder name
    make the saved weights unfindable."""
    def text(value):
        return ".".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)

    parts = [f"{name}-{text(value)}" for name, value in parameters.items()]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(parts)) or "default"



def flatten_metrics(metrics: dict, prefix: str = "") -> dict:
    """{"dice": {"disc": 0.9}} -> {"dice.disc": 0.9}; numbers, strings and None only (lists are left out)."""
    flat = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, f"{prefix}{key}."))
        elif value is None or isinstance(value, (int, float, str)):
            flat[f"{prefix}{key}"] = value
    return flat



def summary_rows(runs: list[dict]) -> list[dict]:
    """One row per run (its parameters, status and flattened metrics), then "mean" and "sd" rows of the
    numeric metric columns over the runs that succeeded."""
    rows = [{"run": run["name"], **run["parameters"], "status": run["status"], **run["metrics"]} for run in runs]
    metric_keys = [k for k in dict.fromkeys(k for run in runs for k in run["metrics"])
                   if all(isinstance(run["metrics"].get(k), (int, float)) for run in runs if run["status"] == "ok")]
    done = [run["metrics"] for run in runs if run["status"] == "ok"]
    if done:
        values = {k: [float(m[k]) for m in done] for k in metric_keys}
        rows.append({"run": "mean", "status": f"{len(done)} ok", **{k: statistics.fmean(v) for k, v in values.items()}})
        rows.append({"run": "sd", **{k: statistics.stdev(v) if len(v) > 1 else math.nan for k, v in values.items()}})
    return rows



def write_summary(rows: list[dict], sweep_dir: Path) -> tuple[Path, Path]:
    """summary.csv and summary.md in sweep_dir, one row per run plus mean/sd rows."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, columns)
    writer.writeheader()
    writer.writerows(rows)
    cells = [[_format_cell(row.get(k, "")) for k in columns] for row in rows]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    csv_path, md_path = sweep_dir / "summary.csv", sweep_dir / "summary.md"
    _replace_text(csv_path, table.getvalue())
    _replace_text(md_path, "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells]) + "\n")
    return csv_path, md_path



def _replace_text(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it over `path`: a sweep stopped mid-write
    keeps the previous table whole."""
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", newline="") as f:
        f.write(text)
    os.replace(temporary, path)



def _format_cell(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)



def notebook_parameters(notebook: Path) -> list[str]:
    """The names that `notebook`'s cell tagged `parameters` defines."""
    import papermill

    return list(papermill.inspect_notebook(str(notebook)))



def run_sweep(notebook: Path, params: list[list[str]], sweep_dir: Path, data_dir: Path | None = None) -> int:
    """Execute `notebook` once per grid point into sweep_dir/<run>/; 1 if any run failed, 130 if stopped by
    Ctrl-C. The summary is rewritten after every run, so a sweep stopped part-way still has the table of the
    runs it finished."""
    runs, grid = [], parameter_grid(params)
    for number, parameters in enumerate(grid, 1):
        name = run_name(parameters)
        run_dir = sweep_dir / name
        output = run_dir / notebook.name
        injected = {**parameters, "output_dir": str(run_dir)}
        if data_dir is not None:
            injected["data_dir"] = str(data_dir)
        print(f"[{number}/{len(grid)}] running {notebook.name} {parameters} -> {output}", flush=True)
        status, metrics = "ok", {}
        try:
            execute_notebook(notebook, output, injected)
            metrics = flatten_metrics(json.loads((run_dir / "metrics.json").read_text()))
        except KeyboardInterrupt:
            print(f"stopped (Ctrl-C) during {name}; finished runs: {len(runs)}"
                  + (f", their summary is in {sweep_dir}" if runs else ""), file=sys.stderr)
            return 130
        except Exception as err:  # papermill's error names the failing cell; the notebook keeps the traceback
            status = "failed"
            print(f"{name} failed: {type(err).__name__}: {_last_line(err)}\n"
                  f"  the executed notebook with the error is {output}", file=sys.stderr)
        runs.append({"name": name, "parameters": parameters, "status": status, "metrics": metrics})
        csv_path, md_path = write_summary(summary_rows(runs), sweep_dir)
    failed = [run["name"] for run in runs if run["status"] != "ok"]
    print(f"summary: {csv_path} and {md_path}" + (f"; failed runs: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0



def _last_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return lines[-1] if lines else ""


def add_commands(commands) -> None:
    notebooks = commands.add_parser("notebooks", help="execute every notebook in order into --out (papermill)",
                                    description="Execute notebooks/0N_*.ipynb in order into OUT/0N_*.ipynb, each "
                                                "writing its results into OUT/0N_*/.")
    notebooks.add_argument("--data-dir", type=Path, default=Path("data/spine-mri"), help="the dataset")
    notebooks.add_argument("--out", type=Path, default=Path("outputs"), help="executed notebooks and results")
    notebooks.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                           help="a parameter for the notebooks that have it, e.g. -p epochs 5 (repeat for more)")
    notebooks.set_defaults(run=notebooks_command, command_parser=notebooks)
    sweep = commands.add_parser("sweep", help="run one notebook over a parameter grid and tabulate the metrics",
                                description="Run a notebook once per combination of the --param values into "
                                            "OUT/NAME/<run>/, rewriting summary.csv and summary.md after every run.")
    sweep.add_argument("--param", nargs="+", action="append", default=[], metavar=("NAME", "VALUE"),
                       help="a parameter and its values; repeat for a grid (every combination runs)")
    sweep.add_argument("--notebook", type=Path, default=NOTEBOOK_DIR / "04_train_unet.ipynb", help="the notebook")
    sweep.add_argument("--name", default=None, help="sweep folder name (default: the notebook and swept names)")
    sweep.add_argument("--out", type=Path, default=Path("outputs/sweeps"), help="where sweep folders go")
    sweep.add_argument("--data-dir", type=Path, default=None, help="the dataset (default: the notebook's own)")
    sweep.set_defaults(run=sweep_command, command_parser=sweep)


def notebooks_command(args) -> int:
    known = {name for notebook in notebook_paths() for name in notebook_parameters(notebook)}
    unknown = sorted({name for name, _ in args.parameter} - known)
    if unknown:
        args.command_parser.error(f"no notebook has the parameter {', '.join(unknown)} (parameters: {', '.join(sorted(known))})")
    parameters = {name: parse_value(value) for name, value in args.parameter}
    return run_notebooks(args.data_dir.resolve(), args.out.resolve(), parameters)


def sweep_command(args) -> int:
    if any(len(param) < 2 for param in args.param):
        args.command_parser.error("--param needs a name and at least one value")
    if not args.notebook.is_file():
        args.command_parser.error(f"{args.notebook}: no such notebook")
    known = notebook_parameters(args.notebook)
    unknown = [param[0] for param in args.param if param[0] not in known]
    if unknown:  # papermill would only warn and run the defaults: a typo would cost a full run per grid point
        args.command_parser.error(f"{args.notebook.name} has no parameter {', '.join(unknown)} (its parameters: {', '.join(known)})")
    name = args.name or "-".join([args.notebook.stem] + [param[0] for param in args.param])
    data_dir = args.data_dir.resolve() if args.data_dir else None
    return run_sweep(args.notebook.resolve(), args.param, args.out.resolve() / name, data_dir)
