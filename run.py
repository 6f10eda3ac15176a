"""The project's command line: `notebooks` executes every notebook in order into outputs/ (papermill);
`sweep` runs one notebook over a parameter grid into outputs/sweeps/<name>/ and tabulates every run's metrics;
`train` trains and evaluates a UNet on a dataset without a notebook (settings: config.TrainConfig), on this machine,
as one worker of a cluster (TF_CONFIG set), or as a cluster of local worker processes (--local-workers N);
`label-issues` ranks a dataset's examples by label quality from out-of-fold predictions (label_issues.py).

Every notebook run starts its kernel in notebooks/ (as nbval does), so relative paths behave the same both ways.
"""
from __future__ import annotations

import argparse
import ast
import csv
import io
import itertools
import json
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import config

PROJECT_DIR = Path(__file__).resolve().parent
NOTEBOOK_DIR = PROJECT_DIR / "notebooks"


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


# ---------------------------------------------------------------- sweeps


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


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One `--name VALUE` option per TrainConfig setting, defaulting to TrainConfig's own default."""
    comments = config.setting_comments()
    for name, default in config.TrainConfig().to_dict().items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=parse_value, default=argparse.SUPPRESS,
                            metavar="VALUE", help=f"{comments.get(name, '')} (default: {default!r})".lstrip().replace('%', '%%'))


def config_from_arguments(args: argparse.Namespace):
    """The TrainConfig of the settings given on the command line (others at their defaults)."""
    given = {name: value for name, value in vars(args).items() if name in config.TrainConfig().to_dict()}
    return config.TrainConfig().replace(**given)


def _last_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return lines[-1] if lines else ""


def run_training(data_dir: Path, out_dir: Path, settings) -> int:
    """Train and evaluate as `settings` (a TrainConfig) say, into out_dir; 1 with one line per data problem.
    A worker of a cluster says what it trained on and its weights' digest; only the chief writes out_dir."""
    import evaluate
    import loader
    import train

    try:
        result = train.run(data_dir, out_dir, settings, verbose=2)
    except loader.DataError as err:
        print(err, file=sys.stderr)
        return 1
    if "shard" in result:  # a worker other than the chief
        print(worker_line(result["worker"], result["workers"], result["shard"], result["weights_sha256"])
              + "; the chief (worker 0) writes the outputs")
        end_worker_process()
    print(evaluate.format_scores(result))
    if "workers" in result:
        print(worker_line(0, result["workers"], result["shards"]["0"], result["weights_sha256"]))
    print(f"done: metrics.json, predictions/ and model.h5 are in {out_dir}/")
    if "workers" in result:
        end_worker_process()
    return 0


def run_label_issues(args: argparse.Namespace) -> int:
    """Rank the examples of args.data_dir by label quality into args.out (with --plant-errors, of a planted copy);
    1 with one line per data problem."""
    import label_issues
    import loader

    given = {"epochs": args.epochs, "seed": args.seed, "review_log": args.review_log}
    settings = label_issues.label_issue_config(**{k: v for k, v in given.items() if v is not None})
    try:
        data_dir, planted = ((args.data_dir, None) if not args.plant_errors else
                             label_issues.planted_copy(args.data_dir, args.out, args.plant_errors, args.seed))
        folds = args.folds or config.LABEL_ISSUE_FOLDS
        report = label_issues.find_label_issues(data_dir, args.out, folds, settings, planted)
    except loader.DataError as err:
        print(err, file=sys.stderr)
        return 1
    print(label_issues.format_ranking(report))
    print(f"done: label_issues.json, pictures/ and predictions/ are in {args.out}/")
    return 0


def worker_line(worker: int, workers: int, shard: list, digest: str) -> str:
    """What one worker of a cluster reports when it is done (the workers' digests must agree)."""
    return (f"worker {worker} of {workers} done: trained on its shard of {len(shard)} train examples, "
            f"weights sha256 {digest}")


def end_worker_process() -> None:
    """End a cluster worker's process now, its output flushed, without Python's teardown.

    The workers leave their last collective step together; TensorFlow's teardown then takes seconds, and a worker
    still alive when the chief's process (which hosts the cluster's coordination service) is gone logs connection
    errors, as the chief does about a worker gone while it still runs. Ending at once, they leave together."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# ---------------------------------------------------------------- training on local worker processes


def free_loopback_ports(count: int) -> list[int]:
    """`count` distinct TCP ports that are free on 127.0.0.1 now (the system picks them)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:  # all bound at once, so the system cannot hand out one port twice
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def local_tf_configs(count: int) -> list[str]:
    """The TF_CONFIG of each of `count` workers of one cluster on loopback; worker 0 is the chief."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_loopback_ports(count)]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": k}}) for k in range(count)]


def forward_lines(stream, prefix: str, out, lock: threading.Lock) -> None:
    """Copy `stream`'s lines to `out` as they come, each after `prefix`; `lock`, shared by every forwarder, keeps
    the lines of different workers from mixing within a line."""
    for line in stream:
        with lock:
            out.write(prefix + line)
            out.flush()


def run_local_workers(command: list[str], count: int) -> int:
    """Run `command` as `count` worker processes of one cluster on loopback (each with its TF_CONFIG) and wait
    for all, forwarding their output as it comes: the chief's (worker 0) as it is, the others' lines prefixed
    "[worker K] ". 1 if a worker fails (the others are stopped: they would wait for it for ever), 130 on Ctrl-C
    (all stopped)."""
    workers, forwarders, lock = [], [], threading.Lock()
    for k, tf_config in enumerate(local_tf_configs(count)):
        worker = subprocess.Popen(command, env={**os.environ, "TF_CONFIG": tf_config}, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        for stream, out in ((worker.stdout, sys.stdout), (worker.stderr, sys.stderr)):
            prefix = f"[worker {k}] " if k else ""
            forwarders.append(threading.Thread(target=forward_lines, args=(stream, prefix, out, lock), daemon=True))
            forwarders[-1].start()
        workers.append(worker)
    try:
        while None in (codes := [worker.poll() for worker in workers]) and not any(codes):
            time.sleep(0.2)
    except KeyboardInterrupt:
        stop_child_processes()
        print("stopped (Ctrl-C): every worker was stopped", file=sys.stderr)
        return 130
    failed = [k for k, code in enumerate(codes) if code]
    if failed:
        stop_child_processes()
    for thread in forwarders:
        thread.join()
    if failed:
        print(f"worker {failed[0]} failed (exit code {codes[failed[0]]}); the other workers were stopped",
              file=sys.stderr)
        return 1
    return 0


def worker_command(args: argparse.Namespace) -> list[str]:
    """The `run.py train` command each local worker runs: the data, --out and the settings given (as literals)."""
    settings = [[f"--{name.replace('_', '-')}", repr(value)] for name, value in vars(args).items()
                if name in config.TrainConfig().to_dict()]
    return [sys.executable, str(Path(__file__).resolve()), "train", str(args.data_dir), "--out", str(args.out),
            *itertools.chain.from_iterable(settings)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="run.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    notebooks = commands.add_parser("notebooks", help="execute every notebook in order into --out")
    notebooks.add_argument("--data-dir", type=Path, default=PROJECT_DIR / "data" / "spine-mri")
    notebooks.add_argument("--out", type=Path, default=PROJECT_DIR / "outputs")
    notebooks.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                           help="a parameter for the notebooks that have it, e.g. -p epochs 5 (repeat for more)")
    sweep = commands.add_parser("sweep", help="run one notebook over a parameter grid and tabulate the metrics")
    sweep.add_argument("--param", nargs="+", action="append", default=[], metavar=("NAME", "VALUE"),
                       help="a parameter and its values; repeat for a grid (every combination runs)")
    sweep.add_argument("--notebook", type=Path, default=NOTEBOOK_DIR / "04_train_unet.ipynb")
    sweep.add_argument("--name", default=None, help="sweep folder name (default: the swept parameter names)")
    sweep.add_argument("--out", type=Path, default=PROJECT_DIR / "outputs" / "sweeps")
    sweep.add_argument("--data-dir", type=Path, default=None, help="default: the notebook's own data_dir")
    training = commands.add_parser("train", help="train and evaluate a UNet on DATA_DIR (every setting: see below)")
    training.add_argument("data_dir", type=Path)
    training.add_argument("--out", type=Path, default=PROJECT_DIR / "outputs" / "train")
    training.add_argument("--local-workers", type=int, default=None, metavar="N",
                          help="train as a cluster of N worker processes on this machine (loopback), to try "
                               "multi-worker training; on several machines set TF_CONFIG instead (docs/distributed.md)")
    add_config_arguments(training)
    issues = commands.add_parser("label-issues", help="rank the examples of DATA_DIR by label quality "
                                 "(out-of-fold predictions; docs/label_issues.md)")
    issues.add_argument("data_dir", type=Path, help="the dataset (images/ + masks/, nnU-Net's layout, or dataset.json)")
    issues.add_argument("--out", type=Path, default=PROJECT_DIR / "outputs" / "label-issues",
                        help="label_issues.json, pictures/ and predictions/ go here (default: outputs/label-issues)")
    issues.add_argument("--folds", type=int, default=None,
                        help=f"models to train (default: {config.LABEL_ISSUE_FOLDS})")
    issues.add_argument("--epochs", type=int, default=None,
                        help=f"at most, per model (default: {config.LABEL_ISSUE_TRAINING['epochs']})")
    issues.add_argument("--seed", type=int, default=0, help="folds, training and planted errors derive from it")
    issues.add_argument("--review-log", default=None, help="train examples a reviewer marked \"problem\" are set aside")
    issues.add_argument("--plant-errors", type=int, default=0, metavar="N",
                        help="rank a copy of the data with N planted errors of each kind, and report where they rank")
    args = parser.parse_args(argv)
    if args.command == "label-issues":
        if args.folds is not None and args.folds < 2:
            parser.error(f"--folds must be at least 2, got {args.folds}")
        return run_label_issues(args)
    if args.command == "notebooks":
        known = {name for notebook in notebook_paths() for name in notebook_parameters(notebook)}
        unknown = sorted({name for name, _ in args.parameter} - known)
        if unknown:
            parser.error(f"no notebook has the parameter {', '.join(unknown)} (parameters: {', '.join(sorted(known))})")
        parameters = {name: parse_value(value) for name, value in args.parameter}
        return run_notebooks(args.data_dir.resolve(), args.out.resolve(), parameters)
    if args.command == "train":
        try:
            settings = config_from_arguments(args)
        except (TypeError, ValueError) as err:
            parser.error(str(err))
        if args.local_workers is None:
            return run_training(args.data_dir, args.out, settings)
        if args.local_workers < 1:
            parser.error(f"--local-workers must be at least 1, got {args.local_workers}")
        if os.environ.get("TF_CONFIG"):
            parser.error("--local-workers starts its own cluster on loopback: unset TF_CONFIG first")
        return run_local_workers(worker_command(args), args.local_workers)
    if any(len(param) < 2 for param in args.param):
        parser.error("--param needs a name and at least one value")
    if not args.notebook.is_file():
        parser.error(f"{args.notebook}: no such notebook")
    known = notebook_parameters(args.notebook)
    unknown = [param[0] for param in args.param if param[0] not in known]
    if unknown:  # papermill would only warn and run the defaults: a typo would cost a full run per grid point
        parser.error(f"{args.notebook.name} has no parameter {', '.join(unknown)} (its parameters: {', '.join(known)})")
    name = args.name or "-".join([args.notebook.stem] + [param[0] for param in args.param])
    data_dir = args.data_dir.resolve() if args.data_dir else None
    return run_sweep(args.notebook.resolve(), args.param, args.out.resolve() / name, data_dir)


if __name__ == "__main__":
    sys.exit(main())
