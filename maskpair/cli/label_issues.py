"""`label-issues`: rank a dataset's examples by label quality from out-of-fold predictions: all folds here, or
one fold per job (`--fold k`, on any machine) and then `--merge` (docs/distributed.md)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from maskpair.cli.train import end_worker_process
from maskpair.errors import DataError
from maskpair.training import config


def run_label_issues(args: argparse.Namespace) -> int:
    """Rank the examples of args.data_dir by label quality into args.out (with --plant-errors, of a planted copy),
    or with --fold only train, predict and score that fold, or with --merge only rank the folds there;
    1 with one line per data problem."""
    from maskpair import label_issues

    given = {"epochs": args.epochs, "seed": args.seed, "review_log": args.review_log}
    settings = label_issues.label_issue_config(**{k: v for k, v in given.items() if v is not None})
    try:
        data_dir, planted = ((args.data_dir, None) if not args.plant_errors else
                             label_issues.planted_copy(args.data_dir, args.out, args.plant_errors, args.seed))
        if args.fold is not None:
            record = label_issues.run_fold(data_dir, args.out / label_issues.FOLDS_DIR, args.fold, args.folds,
                                           settings, planted)
            if record is None:  # a worker of a cluster other than the chief
                print(f"fold {args.fold} of {args.folds}: this worker's part is done; the chief (worker 0) writes "
                      "the fold")
            else:
                print(f"fold {args.fold} of {args.folds} done: {len(record['examples'])} examples scored, in "
                      f"{args.out / label_issues.FOLDS_DIR}/fold-{args.fold}/; once all {args.folds} folds are "
                      f"there, run label-issues with --merge instead of --fold (the same data, --out and settings)")
            if os.environ.get("TF_CONFIG"):
                end_worker_process()  # the workers leave together (cli/train.py says why)
            return 0
        if args.merge:
            report = label_issues.merge_folds(data_dir, args.out, args.folds, settings, planted)
        else:
            report = label_issues.find_label_issues(data_dir, args.out, args.folds, settings, planted)
    except DataError as err:
        print(err, file=sys.stderr)
        return 1
    print(label_issues.format_ranking(report))
    print(f"done: label_issues.json, pictures/ and predictions/ are in {args.out}/")
    return 0


def add_commands(commands) -> None:
    issues = commands.add_parser("label-issues", help="rank the examples of DATA_DIR by label quality "
                                 "(out-of-fold predictions; docs/label_issues.md)",
                                 description="Train K models, predict every example with the one that did not "
                                             "train on it, and rank the examples by label quality (cleanlab) into "
                                             "OUT/label_issues.json with pictures/ and predictions/. The folds "
                                             "can run as separate jobs: --fold k for each k, then --merge "
                                             "(docs/distributed.md).")
    issues.add_argument("data_dir", type=Path, help="the dataset (images/ + masks/, nnU-Net's layout, or dataset.json)")
    issues.add_argument("--out", type=Path, default=Path("outputs/label-issues"),
                        help="label_issues.json, pictures/ and predictions/ go here (and folds/ of --fold jobs)")
    issues.add_argument("--folds", type=int, default=config.LABEL_ISSUE_FOLDS, help="models to train")
    issues.add_argument("--epochs", type=int, default=config.LABEL_ISSUE_TRAINING["epochs"], help="at most, per model")
    issues.add_argument("--seed", type=int, default=0, help="folds, training and planted errors derive from it")
    issues.add_argument("--review-log", default=None, help="train examples a reviewer marked \"problem\" are set aside")
    issues.add_argument("--plant-errors", type=int, default=0, metavar="N",
                        help="rank a copy of the data with N planted errors of each kind, and report where they rank")
    job = issues.add_mutually_exclusive_group()
    job.add_argument("--fold", type=int, default=None, metavar="k",
                     help="only train, predict and score fold k (0..K-1) into OUT/folds/fold-k/, on any machine")
    job.add_argument("--merge", action="store_true",
                     help="only rank the K folds under OUT/folds/ (made with these settings) into OUT")
    issues.set_defaults(run=label_issues_command, command_parser=issues)


def label_issues_command(args) -> int:
    if args.folds < 2:
        args.command_parser.error(f"--folds must be at least 2, got {args.folds}")
    if args.fold is not None and not 0 <= args.fold < args.folds:
        args.command_parser.error(f"--fold must be in 0..{args.folds - 1} (--folds {args.folds}), got {args.fold}")
    if os.environ.get("TF_CONFIG") and args.fold is None and not args.merge:
        args.command_parser.error("with TF_CONFIG set, each command trains one fold with the cluster's workers: "
                                  "give --fold k (docs/distributed.md)")
    return run_label_issues(args)
