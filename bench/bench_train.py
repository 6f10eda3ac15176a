"""Training-step speed of the default UNet: steps/s and pairs/s at batch 4 and 16, on 160 px crops and 256 px whole
images, with and without XLA (`TrainConfig.jit_compile`) and mixed precision (`TrainConfig.mixed_precision`).

    python bench/bench_train.py                 # every configuration (~40 min on 2 busy cores)
    python bench/bench_train.py --quick         # smoke run: batch 4, 64 px, 2 timed steps
    python bench/bench_train.py --scores        # also: a short training run of the example pairs per XLA setting

Each configuration runs in its own subprocess (XLA and the precision policy are process-wide choices): the default
UNet (`model.build_model`, resnet18 encoder, the Dice + focal loss) is fit by `model.fit` on compact batches
(uint8 image, uint8 label map) of the example pairs, cut to the size, as training feeds them. A step is timed from
Keras' batch begin to batch end (`fit.StepTimer`); the first steps, which trace the graph (and compile it with
XLA), are left out and the median of the rest is kept. "first step s" is that tracing / compiling step.
"mixed_bfloat16" is measured for comparison only (this CPU has AVX512-BF16/AMX; TrainConfig offers float16,
which GPUs run fast).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PROJECT_DIR = Path(__file__).resolve().parents[1]
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
WARMUP_STEPS = 2  # tracing (and XLA compiling) happens in the first; the second settles allocations


def example_batches(data_dir: Path, batch_size: int, size: int, seed: int = 0):
    """(images uint8 (B, size, size, 1), label maps uint8 (B, size, size)) of the example pairs: top-left-anchored
    windows at seeded offsets (the whole image when size is its size), cycling through the pairs."""
    from maskpair.data.loader import DataLoader

    data = DataLoader(data_dir, batch_size=batch_size, split=(1.0, 0.0, 0.0), progress=False)
    rng = np.random.default_rng(seed)
    pairs = [data.raw_pair(name) for name in data.names]
    images, labels = [], []
    for k in range(batch_size):
        image, mask = pairs[k % len(pairs)]
        top, left = (rng.integers(0, side - size + 1) for side in mask.shape)
        images.append(image[top : top + size, left : left + size])
        labels.append(mask[top : top + size, left : left + size])
    return np.stack(images), np.stack(labels)


def measure(batch_size: int, size: int, jit: bool, precision: str, steps: int, data_dir: Path) -> dict:
    """Fit the default UNet for WARMUP_STEPS + `steps` steps on one repeated batch; median step time."""
    from maskpair.training import fit, model

    tf = model.tf
    fit.seed_everything(0, deterministic_ops=not jit)  # as train.train_model does
    images, labels = example_batches(data_dir, batch_size, size)
    unet = model.build_model(images.shape[-1], 3, jit_compile=jit, policy=precision)
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat().prefetch(2)
    timer = fit.StepTimer()
    start = time.perf_counter()
    unet.fit(dataset, steps_per_epoch=WARMUP_STEPS + steps, epochs=1, callbacks=[timer], verbose=0)
    wall = time.perf_counter() - start
    median = statistics.median(timer.seconds[WARMUP_STEPS:])
    return {"steps_per_s": 1 / median, "pairs_per_s": batch_size / median, "median_step_s": median,
            "first_step_s": timer.seconds[0], "wall_s": wall, "load": os.getloadavg()[0]}


def forward_flops(size: int) -> dict:
    """Floating-point operations of one pair's forward pass through the default UNet at size x size (TensorFlow's
    profiler on the frozen graph; a multiply-add counts 2), and its parameters."""
    from maskpair.training import model  # first: it sets TensorFlow up for tf-keras

    tf = model.tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    unet = model.build_model(1, 3)
    spec = tf.TensorSpec((1, size, size, 1), tf.float32)
    graph = convert_variables_to_constants_v2(tf.function(lambda x: unet(x, training=False)).get_concrete_function(spec))
    options = {**tf.compat.v1.profiler.ProfileOptionBuilder.float_operation(), "output": "none"}
    profile = tf.compat.v1.profiler.profile(graph=graph.graph, options=options)
    return {"forward_flops": profile.total_float_ops, "parameters": unet.count_params()}


def short_run(jit: bool, data_dir: Path, epochs: int) -> dict:
    """Train on the example pairs as `maskpair train` does (the default TrainConfig but `epochs`) with XLA on or
    off: test Dice and the time per step."""
    from maskpair.training import fit, train
    from maskpair.training.config import TrainConfig

    config = TrainConfig(epochs=epochs, jit_compile=jit)
    data = train.prepare_data(data_dir, config)
    model, report = train.train_model(data, config, None)
    largest = train.choose_largest_structure(model, data, config)
    metrics, _ = train.test_metrics(model, data, config, report, largest)
    summary = fit.training_summary(report)
    return {"dice": metrics["dice"], "mean_dice": metrics["mean_dice"], "best_val_loss": summary["best_val_loss"],
            "median_step_s": summary["median_step_seconds"], "train_s": summary["train_seconds"],
            "epochs_run": summary["epochs_run"], "load": os.getloadavg()[0]}


def run_in_subprocess(*arguments, timeout: float | None = None) -> dict:
    """`measure` (or `short_run`) in a fresh interpreter; {"timed_out": seconds} if it takes longer than `timeout`."""
    command = [sys.executable, __file__, *map(str, arguments)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_DIR, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"timed_out": timeout, "load": os.getloadavg()[0]}
    if done.returncode:
        raise RuntimeError(f"{' '.join(command[2:])} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def format_table(rows: dict) -> str:
    """Markdown table; "× default" is pairs/s over the same batch and input without XLA in float32."""
    lines = ["| batch | input | XLA | precision | steps/s | pairs/s | × default | median step s | first step s | load |",
             "|---:|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for (batch_size, size, jit, precision), row in rows.items():
        where = f"| {batch_size} | {size} px {'whole images' if size == 256 else 'crops'} | {'on' if jit else 'off'} "
        if "skipped" in row:
            lines.append(f"{where}| {precision} | {row['skipped']} | | | | | |")
            continue
        if "timed_out" in row:
            lines.append(f"{where}| {precision} | not done in {row['timed_out']:.0f} s ({row['steps']} steps) | | | | "
                         f"| {row['load']:.1f} |")
            continue
        default = rows.get((batch_size, size, False, "float32"), {}).get("pairs_per_s", float("nan"))
        lines.append(f"{where}| {precision} | {row['steps_per_s']:.2f} | {row['pairs_per_s']:.1f} "
                     f"| {row['pairs_per_s'] / default:.2f} | {row['median_step_s']:.3f} | {row['first_step_s']:.1f} "
                     f"| {row['load']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 4, 64 px crops, 2 timed steps")
    parser.add_argument("--steps", type=int, help="timed steps per configuration (default 6; 2 with --quick)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", help="default 4 16")
    parser.add_argument("--sizes", type=int, nargs="+", help="input sides: crops, and 256 = whole images "
                        "(default 160 256)")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, help=f"default {' '.join(PRECISIONS)}")
    parser.add_argument("--scores", type=int, nargs="?", const=10, metavar="EPOCHS",
                        help="also train the example pairs for EPOCHS epochs (default 10) with XLA off and on")
    parser.add_argument("--xla", nargs="+", choices=("off", "on"), default=["off", "on"], help="default: both")
    parser.add_argument("--timeout", type=float, default=900, help="seconds a configuration may take (default 900: "
                        "float16 convolutions are slow on a CPU)")
    parser.add_argument("--data-dir", type=Path, default=PROJECT_DIR / "data" / "spine-mri", help="the example pairs")
    parser.add_argument("--measure", nargs=6, help=argparse.SUPPRESS)  # internal: one configuration
    parser.add_argument("--short-run", nargs=3, help=argparse.SUPPRESS)  # internal: one training run
    parser.add_argument("--flops", type=int, help=argparse.SUPPRESS)  # internal: one input size's forward FLOPs
    args = parser.parse_args(argv)
    if args.measure:
        batch_size, size, jit, precision, steps, data_dir = args.measure
        print(json.dumps(measure(int(batch_size), int(size), jit == "True", precision, int(steps), Path(data_dir))))
        return 0
    if args.flops:
        print(json.dumps(forward_flops(args.flops)))
        return 0
    if args.short_run:
        jit, data_dir, epochs = args.short_run
        print(json.dumps(short_run(jit == "True", Path(data_dir), int(epochs))))
        return 0
    from maskpair.data.fetch import fetch_example_data

    if not (args.data_dir / "images").is_dir():
        fetch_example_data(args.data_dir)
    batch_sizes = args.batch_sizes or ([4] if args.quick else [4, 16])
    sizes = args.sizes or ([64] if args.quick else [160, 256])
    precisions = args.precisions or (("float32",) if args.quick else PRECISIONS)
    steps = args.steps or (2 if args.quick else 6)
    xla = [setting == "on" for setting in args.xla]
    load_before, rows, too_slow = os.getloadavg()[0], {}, {}
    for batch_size in batch_sizes:
        for size in sizes:
            for precision in precisions:
                for jit in xla:
                    if (jit, precision) in too_slow:  # larger steps would take longer still
                        rows[(batch_size, size, jit, precision)] = too_slow[(jit, precision)]
                        continue
                    row = {"steps": WARMUP_STEPS + steps, **run_in_subprocess(
                        "--measure", batch_size, size, jit, precision, steps, args.data_dir, timeout=args.timeout)}
                    rows[(batch_size, size, jit, precision)] = row
                    if "timed_out" in row:
                        too_slow[(jit, precision)] = {"skipped": f"not run: at batch {batch_size}, {size} px it took "
                                                                 f"over {args.timeout:.0f} s", "load": row["load"]}
                    print(f"  measured batch {batch_size}, {size} px, XLA {jit}, {precision} "
                          f"(load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
    print(format_table(rows))
    flops = {size: run_in_subprocess("--flops", size) for size in sizes}
    print("\nWork per pair (TensorFlow's profiler; a training step is about 3x the forward pass), and what this CPU "
          "made of it:")
    for size, counted in flops.items():
        train_flops = 3 * counted["forward_flops"]
        fastest = max((row["pairs_per_s"] for (b, s_, jit, p), row in rows.items() if s_ == size and "pairs_per_s" in row),
                      default=0)
        print(f"- {size} px: {counted['forward_flops'] / 1e9:.2f} GFLOP forward, ~{train_flops / 1e9:.1f} GFLOP a "
              f"training step; the fastest row above, {fastest:.1f} pairs/s, is {fastest * train_flops / 1e9:.0f} GFLOP/s "
              f"({counted['parameters']:,} parameters)")
    if args.scores:
        print(f"\nShort runs of the example pairs ({args.scores} epochs, default TrainConfig otherwise):\n")
        print("| XLA | test Dice (disc, vertebra) | mean Dice | best val loss | epochs | median step s | train s | load |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for jit in (False, True):
            run = run_in_subprocess("--short-run", jit, args.data_dir, args.scores)
            dice = ", ".join(f"{value:.3f}" for name, value in run["dice"].items() if name != "background")
            print(f"| {'on' if jit else 'off'} | {dice} | {run['mean_dice']:.3f} | {run['best_val_loss']:.4f} "
                  f"| {run['epochs_run']} | {run['median_step_s']:.3f} | {run['train_s']:.0f} | {run['load']:.1f} |")
    print(f"\n{os.cpu_count()} CPUs, 1-min load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after; "
          f"{steps} timed steps per row after {WARMUP_STEPS} warm-up steps; GPU: "
          f"{'yes' if rows and run_gpu_probe() else 'none'}")
    return 0


def run_gpu_probe() -> bool:
    """Whether TensorFlow sees a GPU here (in a subprocess, like the measurements)."""
    code = "from maskpair.training import model; print(model.gpu_present())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_DIR, check=False)
    return done.stdout.strip().endswith("True")


if __name__ == "__main__":
    sys.exit(main())
