"""Every command as a user runs it, from their own folder (which holds a config.py, model.py, utils.py and errors.py
of their own), on a dataset with problems planted in it: a misplaced mask, an empty mask, a duplicated pair, a
planted label error and a reviewer's `problem` verdict. Each test reads the findings in the files the command
wrote, not in Python objects: a report is only trustworthy if it survives being written when it has something
to say (numpy's bools and floats in findings once crashed the JSON writer exactly then).

The notebooks run on such data in tests/test_notebooks.py; `maskpair sweep` with a flagged example in
tests/test_run.py; `maskpair fetch` through the real download in tests/test_fetch.py."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import CLI, PROJECT_DIR
from PIL import Image
from synthetic import write_blobs

from maskpair.jsonio import dumps, plain, write_json
from maskpair.review.log import ReviewLog

SHIFTED, EMPTIED, DUPLICATED, COPY, DOUBTED = "scene2", "scene5", "scene8", "scene8copy", "scene11"


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """(data folder, review log, the user's folder): 16 generated scenes with the problems of the module docstring."""
    root = tmp_path_factory.mktemp("user")
    data = write_blobs(root / "data", n=16, size=64, seed=5)
    masks = data / "masks"
    mask = np.asarray(Image.open(masks / f"{SHIFTED}.png"))
    Image.fromarray(np.roll(mask, 6, axis=0)).save(masks / f"{SHIFTED}.png")  # 6 px down: misplaced
    Image.fromarray(np.zeros_like(mask)).save(masks / f"{EMPTIED}.png")
    for kind in ("images", "masks"):
        shutil.copy(data / kind / f"{DUPLICATED}.png", data / kind / f"{COPY}.png")
    log = ReviewLog(root / "verdicts.jsonl")
    log.record(DOUBTED, "problem", "a structure is missing")
    log.record("scene0", "aligned")
    me = root / "me"
    me.mkdir()
    for name in ("config", "model", "utils", "errors", "loader"):
        (me / f"{name}.py").write_text(f"raise SystemExit('the user file {name}.py was imported')\n")
    return data, log.path, me


def command(args, cwd, check=True, program=CLI):
    done = subprocess.run([*program, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=1200)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_the_json_writer_takes_numpy_findings_and_writes_no_nan(tmp_path):
    finding = {"misaligned": np.float64(0.7) > 0.5, "gain": np.float32(0.25), "count": np.int64(3),
               "shift": np.array([1, -2]), "score": float("nan"), "where": tmp_path, "pair": (np.uint8(1), 2)}
    assert plain(finding) == {"misaligned": True, "gain": 0.25, "count": 3, "shift": [1, -2], "score": None,
                              "where": str(tmp_path), "pair": [1, 2]}
    written = json.loads(write_json(tmp_path / "f.json", finding).read_text())
    assert written["misaligned"] is True and written["score"] is None
    assert "NaN" not in dumps({"x": np.float64("nan")})
    with pytest.raises(TypeError):  # nothing half-written when a value cannot be written
        write_json(tmp_path / "bad.json", {"x": object()})
    assert not (tmp_path / "bad.json").exists() and not list(tmp_path.glob(".bad.json*"))


def test_check_prints_the_description_and_the_thin_loader_face_agrees(planted):
    data, _, me = planted
    done = command(["check", data], cwd=me)
    description = json.loads(done.stdout)
    assert description["labels"] == {"background": 0, "dim": 1, "bright": 2}
    assert "17 pairs" in done.stderr
    face = command(["check", data], cwd=me, program=[sys.executable, str(PROJECT_DIR / "loader.py")])
    assert json.loads(face.stdout) == description


def test_audit_writes_every_planted_finding_into_its_report(planted, tmp_path):
    data, _, me = planted
    done = command(["audit", data, "--json", tmp_path / "audit.json"], cwd=me)
    report = json.loads((tmp_path / "audit.json").read_text())
    flags = {entry["name"]: entry["flags"] for entry in report["examples"]}
    assert any(flag.startswith("misaligned:") for flag in flags[SHIFTED]), flags[SHIFTED]
    entry = next(entry for entry in report["examples"] if entry["name"] == SHIFTED)
    assert entry["alignment"]["misaligned"] is True  # a JSON bool, written from numpy's
    assert "empty_mask" in flags[EMPTIED]
    assert f"duplicate_of:{DUPLICATED}" in flags[COPY]
    assert (tmp_path / "audit.png").stat().st_size > 0 and SHIFTED in done.stdout


@pytest.mark.slow
def test_train_sets_aside_what_the_review_and_the_audit_doubt_and_writes_a_model_folder(planted, tmp_path):
    data, log, me = planted
    command(["train", data, "--out", tmp_path / "run", "--epochs", "1", "--passes-per-epoch", "1", "--crop", "None",
             "--review-log", log, "--train-without-flags", '["empty_mask", "duplicate_of"]'], cwd=me)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    info = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    set_aside = set(info["splits"].get("excluded", []))
    doubted = {DOUBTED, EMPTIED, COPY}
    assert set_aside == doubted & (set_aside | set(info["splits"]["train"]))  # the doubted train examples, only
    assert not set_aside & set(info["splits"]["train"])
    assert metrics["dataset"]["splits"]["excluded"] == len(set_aside)
    assert metrics["config"]["review_log"] == str(log) and metrics["examples"]
    # the model folder segments the data's images in the dataset's own values; evaluate agrees with training
    command(["predict", tmp_path / "run", data / "images", "--out", tmp_path / "pred"], cwd=me)
    assert len(list((tmp_path / "pred").glob("*.png"))) == 17
    command(["evaluate", tmp_path / "run", data, "--out", tmp_path / "eval"], cwd=me)
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["dice"] == metrics["dice"] and evaluated["examples"] == metrics["examples"]


@pytest.mark.slow
def test_label_issues_rank_every_example_with_a_planted_error_among_them(planted, tmp_path):
    data, _, me = planted
    done = command(["label-issues", data, "--out", tmp_path / "issues", "--folds", "2", "--epochs", "1",
                    "--plant-errors", "1"], cwd=me)
    report = json.loads((tmp_path / "issues" / "label_issues.json").read_text())
    assert sorted(entry["rank"] for entry in report["examples"]) == list(range(1, 18))
    assert len(report["planted"]["examples"]) == 4  # one of each kind, each with the rank it got
    assert all(isinstance(entry["flagged"], bool) for entry in report["examples"])
    assert "planted errors found" in done.stdout


def test_a_review_log_line_is_json_with_the_reviewer_and_a_timezone(planted):
    _, log, _ = planted
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["verdict"] for line in lines] == ["problem", "aligned"]
    assert all(line["reviewer"] and line["time"][-6] in "+-" for line in lines)
