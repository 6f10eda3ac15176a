"""`train`: train and evaluate a UNet on a dataset without a notebook (settings: `TrainConfig`), on this machine,
as one worker of a cluster (TF_CONFIG set), or as a cluster of local worker processes (`--local-workers N`)."""
from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from maskpair.cli.notebooks import parse_value, stop_child_processes
from maskpair.errors import ConfigError, DataError
from maskpair.training import config


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



def run_training(data_dir: Path, out_dir: Path, settings) -> int:
    """Train and evaluate as `settings` (a TrainConfig) say, into out_dir; 1 with one line per data problem.
    A worker of a cluster says what it trained on and its weights' digest; only the chief writes out_dir."""
    from maskpair import evaluate
    from maskpair.training import train

    try:
        result = train.run(data_dir, out_dir, settings, verbose=2)
    except (DataError, ConfigError) as err:
        print(err, file=sys.stderr)
        return 1
    if "shard" in result:  # a worker other than the chief
        print(worker_line(result["worker"], result["workers"], result["shard"], result["weights_sha256"])
              + "; the chief (worker 0) writes the outputs")
        end_worker_process()
    print(evaluate.format_scores(result))
    if "workers" in result:
        print(worker_line(0, result["workers"], result["shards"]["0"], result["weights_sha256"]))
    print(f"done: metrics.json, predictions/ and the model folder model/ are in {out_dir}/")
    if "workers" in result:
        end_worker_process()
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
    """The `maskpair train` command each local worker runs: the data, --out and the settings given (as literals)."""
    settings = [[f"--{name.replace('_', '-')}", repr(value)] for name, value in vars(args).items()
                if name in config.TrainConfig().to_dict()]
    return [sys.executable, "-m", "maskpair", "train", str(args.data_dir), "--out", str(args.out),
            *itertools.chain.from_iterable(settings)]


def add_commands(commands) -> None:
    training = commands.add_parser("train", help="train and evaluate a UNet on DATA_DIR (every setting: see below)",
                                   description="Train a UNet on the train split, keep the best val-loss weights, "
                                               "score the test split; write metrics.json, predictions/ and the "
                                               "model into --out. Every setting is a TrainConfig field.")
    training.add_argument("data_dir", type=Path, help="the dataset (images/ + masks/, nnU-Net's layout, or dataset.json)")
    training.add_argument("--out", type=Path, default=Path("outputs/train"), help="output folder")
    training.add_argument("--local-workers", type=int, default=None, metavar="N",
                          help="train as a cluster of N worker processes on this machine (loopback), to try "
                               "multi-worker training; on several machines set TF_CONFIG instead (docs/distributed.md)")
    add_config_arguments(training)
    training.set_defaults(run=train_command, command_parser=training)


def train_command(args) -> int:
    try:
        settings = config_from_arguments(args)
    except (TypeError, ValueError) as err:
        args.command_parser.error(str(err))
    if args.local_workers is None:
        return run_training(args.data_dir, args.out, settings)
    if args.local_workers < 1:
        args.command_parser.error(f"--local-workers must be at least 1, got {args.local_workers}")
    if os.environ.get("TF_CONFIG"):
        args.command_parser.error("--local-workers starts its own cluster on loopback: unset TF_CONFIG first")
    return run_local_workers(worker_command(args), args.local_workers)
