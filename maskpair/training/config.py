"""`TrainConfig`: the single source of training defaults, read by `train.py`, notebook 04 and `maskpair train`
(whose options are its fields, documented by their comments here); and what the label-issue fold models change.

metrics.json records the whole configuration a model was trained with (`TrainConfig.to_dict`).
"""
from __future__ import annotations

import dataclasses
import inspect
import re
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class TrainConfig:
    """How to split, build, train and post-process; defaults finish on a 2-core CPU in about ten minutes."""

    seed: int = 0  # splits, weights, augmentation and shuffles all derive from it
    fold: int = -1  # -1: a seeded split with 20% test; 0..n_folds-1: that fold of a seeded k-fold is test
    n_folds: int = 5
    val_fraction: float = 0.2  # share of all examples for early stopping and the checkpoint choice
    backbone: str = "resnet18"  # segmentation_models encoder
    encoder_weights: str | None = None  # None: from scratch; "imagenet": downloaded (needs the network); or a file
    decoder_filters: tuple = (128, 64, 32, 32, 16)  # lighter than segmentation_models' (256, 128, 64, 32, 16)
    batch_size: int = 4  # lowered (with a warning) when a split is smaller
    epochs: int = 100  # at most; early stopping usually ends training sooner
    passes_per_epoch: int = 5  # passes over the train split per epoch (small datasets: fewer, longer epochs)
    crop: int | None = 160  # train on random crop x crop windows (None: whole images); prediction uses whole images
    learning_rate: float = 1e-3
    augment: bool = True  # paired flips, rotation, zoom, shift; intensity jitter on the image only
    focal_weight: float = 1.0  # loss = Dice + focal_weight x focal
    patience: int = 15  # early stopping: epochs without a better val loss
    lr_patience: int = 5  # halve the learning rate after this many epochs without a better val loss
    flip_average: bool = True  # predict each image and its mirror image, average the probabilities
    largest_structure: str = "auto"  # keep only the largest predicted structure: "auto" (if it helps on val), "on", "off"
    strategy: str = "default"  # "default", or "mirrored" (local GPUs, else 2 logical CPUs); TF_CONFIG set: multi-worker
    jit_compile: bool = False  # compile the training step with XLA (slower on a CPU here: bench/bench_train.py)
    mixed_precision: str = "auto"  # "auto" (float16 on a GPU, off on a CPU), "float16", "bfloat16", "off"
    train_without_flags: tuple = ()  # audit flag codes, e.g. ("empty_mask",): those train examples are set aside
    review_log: str | None = None  # a review log: train examples a reviewer marked "problem" are set aside

    def __post_init__(self):
        if self.largest_structure not in ("auto", "on", "off"):
            raise ValueError(f'largest_structure must be "auto", "on" or "off", got {self.largest_structure!r}')
        if self.strategy not in ("default", "mirrored"):
            raise ValueError(f'strategy must be "default" or "mirrored", got {self.strategy!r}')
        if self.mixed_precision not in ("auto", "float16", "bfloat16", "off"):
            raise ValueError('mixed_precision must be "auto", "float16", "bfloat16" or "off", '
                             f"got {self.mixed_precision!r}")
        if not isinstance(self.jit_compile, bool):
            raise ValueError(f"jit_compile must be True or False, got {self.jit_compile!r}")
        # lists (papermill and JSON give lists) become tuples, so configs compare and print alike
        for name in ("decoder_filters", "train_without_flags"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def to_dict(self) -> dict:
        """Every setting, JSON-ready (for metrics.json)."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in fields(self)}

    def replace(self, **changes) -> "TrainConfig":
        """A copy with some settings changed; an unknown name is an error."""
        unknown = sorted(set(changes) - set(self.to_dict()))
        if unknown:
            raise TypeError(f"TrainConfig has no setting {', '.join(unknown)} (settings: {', '.join(self.to_dict())})")
        return dataclasses.replace(self, **changes)


# Label issues (maskpair/label_issues, `maskpair label-issues`): the fold models, each predicting the examples the
# others train on, and their changes to TrainConfig's defaults. 40 epochs at most: the cheapest budget within 2
# points of the best share of planted errors in the top 3, on the example pairs and a generated set
# (`bench/bench_label_issues.py --epochs 10 20 40`: 0.24 / 0.66 / 0.90 on the pairs, no better at 60 or 80;
# docs/label_issues.md, "Epochs per fold")
LABEL_ISSUE_FOLDS = 4
LABEL_ISSUE_TRAINING = {"epochs": 40, "patience": 10}


def setting_comments() -> dict[str, str]:
    """{setting: its comment in TrainConfig's source}: the comments are the settings' documentation."""
    source = inspect.getsource(TrainConfig)
    return dict(re.findall(r"^    (\w+): [^#\n]*#\s*(.*)$", source, flags=re.M))
