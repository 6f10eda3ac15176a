"""Training-step time and size of notebook 04's UNet with each candidate encoder, on this machine's CPU.

On a CPU a slower step means fewer epochs in the same minutes: this is the cost side of the backbone choice
(the quality side is in docs/experiments.md).

    .venv/bin/python bench/bench_backbones.py [--backbones resnet18 resnet34 ...] [--steps 20]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np

from maskpair.training import fit
from maskpair.training import model as unet

CANDIDATES = ("resnet18", "resnet34", "efficientnetb0", "mobilenetv2", "seresnet18")


def median_step_seconds(backbone: str, steps: int, batch_size: int, crop: int) -> tuple[float, int]:
    """Median seconds per training step on a fixed random batch, and the model's parameter count."""
    fit.seed_everything(0)
    model = unet.build_model(n_channels=1, n_classes=3, backbone=backbone)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch_size, crop, crop, 1), dtype=np.uint8)  # as training feeds them
    labels = rng.integers(0, 3, (batch_size, crop, crop), dtype=np.uint8)  # label maps: the loss makes the one-hot
    dataset = unet.tf.data.Dataset.from_tensors((images, labels)).repeat()
    timer = fit.StepTimer()
    model.fit(dataset, steps_per_epoch=steps + fit.WARMUP_STEPS, epochs=1, callbacks=[timer], verbose=0)
    return statistics.median(timer.seconds[fit.WARMUP_STEPS:]), model.count_params()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=list(CANDIDATES))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--crop", type=int, default=160)
    args = parser.parse_args(argv)
    rows = [(name, *median_step_seconds(name, args.steps, args.batch_size, args.crop)) for name in args.backbones]
    base = rows[0][1]
    print(f"\nbatch {args.batch_size} x {args.crop}px, median of {args.steps} steps, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'backbone':<16}{'params':>12}{'step s':>9}{'x ' + rows[0][0]:>14}")
    for name, seconds, params in rows:
        print(f"{name:<16}{params:>12,}{seconds:>9.3f}{seconds / base:>14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
