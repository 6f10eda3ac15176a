"""`predict` (segment new images with a trained model, written in the dataset's own encoding) and `evaluate`
(score a trained model on a labelled dataset, as training scored its test split)."""
from __future__ import annotations

import sys
from pathlib import Path

from maskpair.errors import DataError


def add_commands(commands) -> None:
    predict = commands.add_parser(
        "predict", help="segment new images with a trained model: OUT/a/b.png for INPUT/a/b.jpg",
        description="Segment every image of INPUT (a folder, searched recursively; one image file; or a text file "
                    "listing image paths) with the model in MODEL (a `maskpair train --out DIR` folder, or its "
                    "model/ folder). Each mask is written in the dataset's own encoding (its label values, or its "
                    "colours), at the image's own size. Exit status 1 if any image could not be read.")
    predict.add_argument("model", type=Path, help="the model folder (DIR or DIR/model)")
    predict.add_argument("input", type=Path, help="an image folder, an image file, or a text file of image paths")
    predict.add_argument("--out", type=Path, required=True, help="where the masks go (mirroring INPUT's folders)")
    predict.add_argument("--probabilities", action="store_true",
                         help="also write OUT/probabilities/<name>.npy (float16, H x W x classes)")
    predict.add_argument("--overlays", action="store_true", help="also write OUT/overlays/<name>.png")
    predict.add_argument("--tile", type=int, default=None, metavar="N",
                         help="predict images with a side longer than N in overlapping N x N windows "
                              "(default: 2048)")
    predict.set_defaults(run=predict_command, command_parser=predict)
    evaluate = commands.add_parser(
        "evaluate", help="score a trained model on a labelled dataset (metrics.json as training writes it)",
        description="Score MODEL on DATA with training's per-class and per-example scores, into OUT/metrics.json: "
                    "the model's test split by default (reproducing training's test scores), every pair with --all.")
    evaluate.add_argument("model", type=Path, help="the model folder (DIR or DIR/model)")
    evaluate.add_argument("data_dir", type=Path, help="a labelled dataset (any layout dataset.json reads)")
    evaluate.add_argument("--out", type=Path, required=True, help="where metrics.json goes")
    evaluate.add_argument("--all", action="store_true", help="score every pair, not only the model's test split")
    evaluate.set_defaults(run=evaluate_command, command_parser=evaluate)


def predict_command(args) -> int:
    from maskpair.training.inference import find_images, predict_files
    from maskpair.training.segmenter import Segmenter

    if args.tile is not None and args.tile < 32:
        args.command_parser.error(f"--tile must be at least 32, got {args.tile}")
    try:
        items = find_images(args.input)
        segmenter = Segmenter.load(args.model)
    except DataError as err:
        print(err, file=sys.stderr)
        return 1
    summary = predict_files(segmenter, items, args.out, args.probabilities, args.overlays, args.tile)
    for path, problem in summary["failed"].items():
        print(f"{problem}", file=sys.stderr)
    rate = summary["predicted"] / summary["seconds"] if summary["seconds"] else 0.0
    print(f"predicted {summary['predicted']} of {len(items)} images in {summary['seconds']:.1f} s "
          f"({rate:.1f} images/s) into {args.out}/" + (f"; {len(summary['failed'])} failed" if summary["failed"] else ""))
    return 1 if summary["failed"] else 0


def evaluate_command(args) -> int:
    from maskpair import evaluate
    from maskpair.training.scoring import evaluate_model

    try:
        metrics = evaluate_model(args.model, args.data_dir, args.out, every_pair=args.all)
    except DataError as err:
        print(err, file=sys.stderr)
        return 1
    print(evaluate.format_scores(metrics))
    print(f"done: {len(metrics['examples'])} examples scored ({metrics['split']}); {args.out / 'metrics.json'}")
    return 0
