"""The review: the durable verdict log (kill test, undo, O(1) append), drawing, the example list, the headless
review session, the review app's actions and callbacks without a browser (tests/test_browser.py drives the real
one), and notebook 02 run headless as a report: the picture of what most needs a look."""
import base64
import csv
import io
import json
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import nbformat
import numpy as np
import pytest
from PIL import Image
from synthetic import write_blobs, write_dataset, write_layout

from maskpair import DataLoader, audit
from maskpair.audit import sheet as audit_sheet
from maskpair.cli import notebooks as notebooks_cli
from maskpair.data import stores
from maskpair.data.reading import read_pair
from maskpair.errors import DataError
from maskpair.review import app as review_app
from maskpair.review import listing, render
from maskpair.review import log as review_log
from maskpair.review.app import ReviewApp
from maskpair.review.log import ReviewLog
from maskpair.review.picture import ReviewImage
from maskpair.review.render import View
from maskpair.review.session import ReviewSession
from maskpair.review.sheet import needs_a_look, review_sheet

# ---------------------------------------------------------------- the verdict log


def test_log_round_trip_keeps_awkward_notes(tmp_path):
    log = ReviewLog(tmp_path / "sub" / "verdicts.jsonl")
    note = 'shifted, "a bit"\nleft; also \u00e9'
    log.record("3", "problem", note)
    log.record("4", "aligned")
    log.record("3", "aligned", "second look")
    verdicts_now = ReviewLog(log.path).verdicts()
    assert verdicts_now["3"]["verdict"] == "aligned" and verdicts_now["3"]["note"] == "second look"
    assert [e["note"] for e in log.entries()][0] == note
    assert set(verdicts_now["4"]) == {"verdict", "note", "time"}


def test_log_refuses_unknown_verdicts(tmp_path):
    log = ReviewLog(tmp_path / "v.jsonl")
    with pytest.raises(ValueError, match="verdict must be one of"):
        log.record("1", "maybe")
    assert log.verdicts() == {}


def test_records_carry_reviewer_and_a_timezone_aware_time(tmp_path, monkeypatch):
    monkeypatch.setattr(review_log.getpass, "getuser", lambda: "os-user")
    log = ReviewLog(tmp_path / "v.jsonl")
    log.record("1", "aligned")
    log.record("2", "problem", "cut", reviewer="ana")
    lines = [json.loads(line) for line in log.path.read_text().splitlines()]
    assert [line["reviewer"] for line in lines] == ["os-user", "ana"]
    for line in lines:
        stamp = datetime.fromisoformat(line["time"])
        assert stamp.tzinfo is not None and stamp.utcoffset() is not None
        assert abs((stamp - datetime.now().astimezone()).total_seconds()) < 60
    assert ReviewLog(log.path).latest()["2"]["reviewer"] == "ana"


def test_old_lines_without_reviewer_or_offset_still_load(tmp_path):
    path = tmp_path / "v.jsonl"
    path.write_text('{"name": "1", "verdict": "problem", "note": "", "time": "2024-05-01T10:00:00"}\n')
    log = ReviewLog(path)
    assert log.verdicts()["1"]["verdict"] == "problem"
    log.record("2", "aligned", reviewer="ana")
    assert set(ReviewLog(path).verdicts()) == {"1", "2"}


def test_torn_last_line_is_ignored_and_cut_before_the_next_append(tmp_path):
    log = ReviewLog(tmp_path / "v.jsonl")
    log.record("1", "aligned")
    with open(log.path, "ab") as handle:
        handle.write(b'{"name": "2", "verd' + b"x" * 9000)  # longer than one block read back from the end
    assert list(ReviewLog(log.path).verdicts()) == ["1"]
    log.record("2", "problem")
    assert log.verdicts()["2"]["verdict"] == "problem"
    assert [json.loads(line)["name"] for line in log.path.read_text().splitlines()] == ["1", "2"]


def test_appending_does_not_reread_the_log(tmp_path, monkeypatch):
    path = tmp_path / "v.jsonl"
    path.write_text("".join(json.dumps({"name": str(k), "verdict": "aligned", "note": "", "time": "t"}) + "\n"
                            for k in range(5000)))
    log = ReviewLog(path)
    assert len(log.verdicts()) == 5000  # the one load

    def no_reading(*args, **kwargs):
        raise AssertionError("the log was read again")

    monkeypatch.setattr(Path, "read_bytes", no_reading)
    monkeypatch.setattr(Path, "read_text", no_reading)
    started = time.perf_counter()
    for k in range(50):
        log.record(f"new{k}", "problem")
    log.undo()
    assert (time.perf_counter() - started) / 51 < 0.05  # an fsync each, nothing proportional to 5,000 lines
    assert log.verdicts()["new48"]["verdict"] == "problem" and "new49" not in log.verdicts()
    monkeypatch.undo()
    assert len(ReviewLog(path).verdicts()) == 5049


def test_undo_walks_back_through_the_history_and_survives_reopening(tmp_path):
    log = ReviewLog(tmp_path / "v.jsonl")
    log.record("a", "aligned", "first")
    log.record("a", "problem", "second")
    log.record("b", "problem")
    assert log.undo(reviewer="ana")["name"] == "b"
    assert "b" not in log.verdicts() and log.verdicts()["a"]["verdict"] == "problem"
    reopened = ReviewLog(log.path)  # the history is in the file, so undo goes on after a restart
    restored = reopened.undo()
    assert restored["verdict"] == "aligned" and restored["note"] == "first" and restored["undo"] is True
    assert reopened.verdicts()["a"]["verdict"] == "aligned"
    assert reopened.undo()["verdict"] == "unreviewed"
    assert reopened.verdicts() == {} and reopened.undo() is None
    lines = [json.loads(line) for line in log.path.read_text().splitlines()]
    assert len(lines) == 6 and sum(bool(line.get("undo")) for line in lines) == 3  # append-only
    assert ReviewLog(log.path).verdicts() == {}


def test_export_csv_latest_verdict_per_name(tmp_path):
    log = ReviewLog(tmp_path / "v.jsonl")
    log.record("2", "problem", 'a "quoted", note', reviewer="ana")
    log.record("1", "aligned", reviewer="bo")
    log.record("2", "aligned", reviewer="ana")
    rows = read_csv(log.export_csv(tmp_path / "out" / "v.csv", names=["1", "2", "3"]))
    assert [(r["name"], r["verdict"], r["reviewer"]) for r in rows] == [("1", "aligned", "bo"), ("2", "aligned", "ana")]
    assert list(rows[0]) == ["name", "verdict", "note", "reviewer", "time"]
    rows = read_csv(log.export_csv(tmp_path / "all.csv"))
    assert [r["name"] for r in rows] == ["2", "1"]


def read_csv(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


WRITER = """
from maskpair.review.log import ReviewLog
log = ReviewLog({path!r})
for k in range({start}, {start} + 100000):
    log.record(str(k), "problem" if k % 2 else "aligned", 'note, "quoted"\\nline ' + str(k))
    print(k, flush=True)
"""


def test_kill_at_random_moments_loses_no_acknowledged_verdict(tmp_path):
    path = tmp_path / "v.jsonl"
    rng = np.random.default_rng(0)
    start = 0
    for _ in range(5):
        code = WRITER.format(path=str(path), start=start)
        writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        acked = [writer.stdout.readline()]  # wait until it is writing
        time.sleep(float(rng.uniform(0.05, 0.4)))
        writer.send_signal(signal.SIGKILL)
        acked += writer.stdout.readlines()
        writer.wait()
        acked = [int(line) for line in acked if line.strip()]
        verdicts_now = ReviewLog(path).verdicts()  # must load
        missing = [k for k in acked if str(k) not in verdicts_now]
        assert not missing, f"acknowledged but lost: {missing[:5]}"
        assert verdicts_now[str(acked[-1])]["note"] == f'note, "quoted"\nline {acked[-1]}'
        start = acked[-1] + 10
    assert len(verdicts_now) > 5


# ---------------------------------------------------------------- the list of examples


REPORT = {"examples": [{"name": "a", "flags": ["empty_mask"]}, {"name": "b", "flags": []},
                       {"name": "c", "flags": ["misaligned:flip_lr", "missing_class:disc"]}]}
FLAGS = {entry["name"]: entry["flags"] for entry in REPORT["examples"]}


def test_select_names_by_flag_verdict_and_rank():
    names, given = ["a", "b", "c"], {"a": {"verdict": "aligned"}, "c": {"verdict": "problem"}}
    select = listing.select_names
    assert select(names, FLAGS, given, flag="flagged") == ["a", "c"]
    assert select(names, FLAGS, given, flag="not flagged") == ["b"]
    assert select(names, FLAGS, given, flag="misaligned") == ["c"]
    assert select(names, FLAGS, given, verdict="unreviewed") == ["b"]
    assert select(names, FLAGS, given, verdict="problem") == ["c"]
    assert select(names, FLAGS, given, flag="flagged", verdict="aligned") == ["a"]
    assert select(names, None, given, flag="flagged") == names  # no audit yet: flag filters pass everything
    assert select(names, FLAGS, given, ranks={"c": 1, "a": 7}, max_rank=5) == ["c"]
    assert listing.progress_text(names, {**given, "elsewhere": {}}) == "reviewed 2 / 3"
    with pytest.raises(ValueError):
        select(names, FLAGS, given, verdict="odd")


def test_sort_names_and_find_name():
    names, given = ["a", "b", "c"], {"a": {"verdict": "aligned"}, "c": {"verdict": "problem"}}
    assert listing.sort_names(names, "flags", FLAGS, given) == ["c", "a", "b"]
    assert listing.sort_names(names, "verdict", FLAGS, given) == ["b", "c", "a"]
    assert listing.sort_names(names, "rank", FLAGS, given, {"c": 1, "b": 2}) == ["c", "b", "a"]
    assert listing.sort_names(names, "name", FLAGS, given, descending=True) == ["c", "b", "a"]
    assert listing.flag_codes(FLAGS["c"]) == ["misaligned", "missing_class"]
    names = ["case_7", "Case_12", "case_120"]
    assert listing.find_name("case_7", names) == "case_7"
    assert listing.find_name(" CASE_12 ", names) == "Case_12"   # case-insensitive, unique
    assert listing.find_name("_120", names) == "case_120"       # a unique part
    assert listing.find_name("case_1", names) is None           # two names contain it
    assert listing.find_name("zz", names) is None


# ---------------------------------------------------------------- the review session, without widgets


NAMES = ["a", "b", "c", "d", "e"]
FIVE_REPORT = {"examples": [{"name": "a", "flags": []}, {"name": "b", "flags": ["empty_mask"]},
                            {"name": "c", "flags": []}, {"name": "d", "flags": ["misaligned:flip_lr", "missing_class:2"]},
                            {"name": "e", "flags": []}]}


@pytest.fixture
def five(tmp_path):
    """A dataset of five small pairs, a to e."""
    return write_dataset(tmp_path / "five", NAMES)


def open_session(data_dir, tmp_path, **kwargs) -> ReviewSession:
    return ReviewSession(data_dir, tmp_path / "v.jsonl", reviewer="tester", **kwargs)


def wait_until(predicate, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_session_steps_stay_inside_the_list_and_names_can_be_typed(five, tmp_path):
    session = open_session(five, tmp_path)
    assert session.order == NAMES and session.current == "a" and session.sort_by == "name"
    session.step(-1)
    assert session.current == "a"
    session.step(10)
    assert session.current == "e"
    session.step(-2)
    assert session.current == "c"
    assert session.upcoming() == ["d", "b"]  # what the renderer prepares: the neighbours (and the next unreviewed)
    assert session.jump_to(" E ") == "e" and session.current == "e" and session.notice == ""
    assert session.jump_to("zz") is None and session.current == "e" and "'zz'" in session.notice
    assert session.jump_to("  ") is None and session.current == "e"
    with pytest.raises(KeyError):
        session.go_to("nope")


def test_session_verdicts_are_written_advance_and_undo(five, tmp_path):
    ReviewLog(tmp_path / "v.jsonl").record("b", "aligned", reviewer="earlier")
    session = open_session(five, tmp_path)
    assert session.current == "a"  # the first without a verdict
    line = session.record("problem", "labels stop short")
    assert line["name"] == "a" and session.current == "c"  # b already has a verdict: skipped
    on_disk = ReviewLog(tmp_path / "v.jsonl").latest()
    assert on_disk["a"]["verdict"] == "problem" and on_disk["a"]["note"] == "labels stop short"
    assert on_disk["a"]["reviewer"] == "tester" and on_disk["b"]["reviewer"] == "earlier"
    session.record("aligned")
    assert session.current == "d" and session.progress() == "reviewed 3 / 5 · 1 problem(s) · reviewer tester"
    assert session.undo()["name"] == "c" and session.current == "c" and "c" not in session.verdicts
    assert session.notice == "undone: c is unreviewed again"
    assert session.undo()["name"] == "a" and session.current == "a" and "a" not in session.verdicts
    assert session.undo()["name"] == "b" and "b" not in session.verdicts  # the history in the file goes on
    assert session.undo() is None and session.notice == "nothing to undo" and session.current == "b"
    assert ReviewLog(tmp_path / "v.jsonl").verdicts() == {}
    session.auto_advance = False
    session.record("aligned")
    assert session.current == "b" and session.verdicts["b"]["verdict"] == "aligned"
    for name in NAMES:
        session.go_to(name)
        session.auto_advance = True
        session.record("aligned")
    assert session.notice == "every example in this list has a verdict" and session.current == "e"


def test_session_reopened_resumes_at_the_first_unreviewed(five, tmp_path):
    first = open_session(five, tmp_path)
    for name in ("a", "b", "d"):
        first.go_to(name)
        first.record("aligned")
    again = open_session(five, tmp_path)
    assert again.current == "c" and set(again.verdicts) == {"a", "b", "d"}
    assert again.progress().startswith("reviewed 3 / 5")


def test_session_filters_and_sort_keep_or_replace_the_current_example(five, tmp_path):
    session = open_session(five, tmp_path)
    session.use_report(FIVE_REPORT)
    assert session.flag_choices() == [("any", "any"), ("flagged (2)", "flagged"), ("not flagged (3)", "not flagged"),
                                      ("empty_mask (1)", "empty_mask"), ("misaligned (1)", "misaligned"),
                                      ("missing_class (1)", "missing_class")]
    session.go_to("c")
    session.set_filters(flag="flagged")
    assert session.order == ["b", "d"] and session.current == "d"  # c is not flagged: the next flagged after it
    assert session.filter_text() == "flags flagged"
    session.go_to("e")
    session.set_filters(flag="empty_mask")
    assert session.order == ["b"] and session.current == "b"  # nothing after e: the first of the list
    session.set_filters(flag="order_gap")
    assert session.order == ["b"] and session.current == "b" and "no example matches" in session.notice
    session.set_filters(flag="any", verdict="unreviewed")
    assert session.order == NAMES and session.notice == ""
    session.record("aligned")
    assert "b" not in session.order and session.current == "c"  # the unreviewed list follows the verdicts
    session.go_to("b")  # excluded by the filter: shown anyway, and in the list while shown
    assert session.current == "b" and "b" in session.order
    session.set_filters(verdict="any", sort_by="flags")
    assert session.order == ["d", "b", "a", "c", "e"] and session.current == "b"
    session.set_filters(sort_by="verdict", descending=True)
    assert session.order[0] == "b" and session.filter_text() == "all, by verdict"
    for refused in ({"verdict": "maybe"}, {"sort_by": "size"}, {"max_rank": -1}):
        with pytest.raises(ValueError):
            session.set_filters(**refused)
    assert (session.verdict_filter, session.sort_by, session.max_rank) == ("any", "verdict", 0)  # nothing changed


def test_session_with_label_issues_opens_at_the_top_of_the_ranking(five, tmp_path):
    issues = tmp_path / "label_issues.json"
    issues.write_text(json.dumps({"examples": [{"name": "d", "rank": 1, "kind": "boundary"},
                                               {"name": "b", "rank": 2, "kind": "missing structure"},
                                               {"name": "a", "rank": None}]}))
    session = open_session(five, tmp_path, label_issues=issues)
    assert session.sort_by == "rank" and session.order[:2] == ["d", "b"] and session.current == "d"
    session.set_filters(max_rank=1)
    assert session.order == ["d"] and session.filter_text() == "rank ≤ 1, by rank"


def test_session_takes_the_flags_when_the_background_audit_ends(five, tmp_path, monkeypatch):
    listening, release, events, written = threading.Event(), threading.Event(), [], []

    def slow_audit(data_dir, progress=None, **kwargs):
        listening.wait(30)  # until the session listens (a real audit reports progress all along)
        progress(1, 5)
        release.wait(30)
        return FIVE_REPORT

    real_write = audit.write_report
    monkeypatch.setattr(audit, "audit_dataset", slow_audit)
    monkeypatch.setattr(audit, "write_report", lambda report, path: written.append(path) or real_write(report, path))
    session = open_session(five, tmp_path)
    session.listeners.append(events.append)
    session.set_filters(flag="flagged")  # chosen before any report: passes everything until the flags arrive
    saved = tmp_path / "out" / "audit.json"
    session.load_audit(audit_paths=[saved, tmp_path / "elsewhere.json"])
    assert session.flags is None and session.order == NAMES and session.flag_choices() == [("any", "any")]
    listening.set()
    wait_until(lambda: "audit progress" in events)
    assert session.audit_status() == "audit running: 1 / 5 pairs"
    assert "still running in the background" in session.summary()
    early = review_sheet(session, tmp_path / "early.png")  # what a notebook cell run now draws, and says
    assert early.names == [] and "no audit flags yet (the audit was still running when this was drawn: 1 / 5 " \
        "pairs done)" in early.text and early.path.is_file()
    session.record("aligned")  # the review goes on meanwhile
    session.go_to("c")
    release.set()
    assert session.wait_for_audit(30) is FIVE_REPORT and events[-1] == "audit done"
    assert session.order == ["b", "c", "d"] and session.current == "c"  # the filter applies; c stays while shown
    assert session.audit_status().startswith("audit (ran in ") and session.audit_status().endswith(": 2 flagged")
    assert written == [saved] and json.loads(saved.read_text()) == FIVE_REPORT  # through audit.write_report
    assert "flags 2 of 5 pairs: b, d" in session.summary() and "Reviewed 1 / 5" in session.summary()


def test_session_keeps_why_the_background_audit_failed(five, tmp_path, monkeypatch):
    def broken_audit(data_dir, progress=None, **kwargs):
        raise DataError("images/c.png: unreadable image")

    monkeypatch.setattr(audit, "audit_dataset", broken_audit)
    session = open_session(five, tmp_path)
    events = []
    session.listeners.append(events.append)
    session.load_audit()
    assert session.wait_for_audit(30) is None and events == ["audit failed"]
    assert session.audit_status() == "audit failed: DataError: images/c.png: unreadable image"
    assert "Traceback" in session.audit_error and "The audit failed (DataError" in session.summary()
    session.step(1)
    assert session.current == "b"


def test_session_without_an_audit_says_so(five, tmp_path):
    session = open_session(five, tmp_path)
    session.load_audit(run_audit=False)
    assert session.audit is None and session.audit_status() == "audit: none (no flags)"
    assert session.wait_for_audit(0) is None and "No audit report was used" in session.summary()


# ---------------------------------------------------------------- drawing


def square_pair(size=20):
    image = np.full((size, size), 100, np.uint8)
    mask = np.zeros((size, size), np.uint8)
    mask[5:15, 5:15] = 1
    return image, mask


def panels(strip, n=3):
    width = (strip.shape[1] - (n - 1) * render.GAP_PX) // n
    return [strip[:, k * (width + render.GAP_PX):k * (width + render.GAP_PX) + width] for k in range(n)]


def test_render_fill_outline_hidden_classes_and_ignore():
    image, mask = square_pair()
    mask[0:3, 0:6] = render.IGNORE_INDEX
    scale = render.panel_size(20, 20)[0] // 20  # small images are upscaled by a whole factor
    assert scale * 20 >= render.MIN_PANEL_PX
    fill = panels(render.render_strip(image, mask, View(opacity=1.0, classes=(1,))))
    outline = panels(render.render_strip(image, mask, View(outline=True, classes=(1,))))
    hidden = panels(render.render_strip(image, mask, View(classes=())))
    colour = tuple(render.class_rgb(1))
    inside, edge = 10 * scale, 5 * scale  # (row, col) pixels at the centre and at the label's top-left edge
    assert tuple(fill[0][inside, inside]) == (100, 100, 100)       # the image panel is the image
    assert tuple(fill[1][inside, inside]) == colour and tuple(fill[2][inside, inside]) == colour
    assert tuple(outline[1][inside, inside]) == (100, 100, 100) and tuple(outline[1][edge, inside]) == colour
    assert tuple(hidden[1][inside, inside]) == (100, 100, 100) and not hidden[2][inside, inside].any()
    ignore_panel = fill[2][0:3 * scale, 0:6 * scale].reshape(-1, 3)
    assert {tuple(c) for c in ignore_panel} == {tuple(render.IGNORE_RGB), tuple(render.HATCH_RGB)}  # hatched


@pytest.mark.parametrize("image", [
    np.full((20, 20), 100, np.uint8), np.full((20, 20, 1), 100, np.uint8),
    np.full((20, 20, 3), 100, np.uint8), np.full((20, 20), 100 / 255, np.float32)])
def test_render_accepts_gray_rgb_and_float_images(image):
    _, mask = square_pair()
    strip = render.render_strip(image, mask, View(classes=(1,)))
    assert strip.dtype == np.uint8 and strip.shape[2] == 3
    assert tuple(panels(strip)[0][0, 0]) == (100, 100, 100)


def test_render_keeps_colour_images_and_adds_the_extra_panel():
    image = np.zeros((20, 20, 3), np.uint8)
    image[..., 0] = 200  # red
    _, mask = square_pair()
    extra = np.zeros((20, 20, 3), np.uint8)
    extra[..., 2] = 255
    strip = render.render_strip(image, mask, View(), extra)
    first, *_, last = panels(strip, 4)
    assert tuple(first[0, 0]) == (200, 0, 0) and tuple(last[0, 0]) == (0, 0, 255)


def test_a_models_prediction_is_drawn_as_the_mask_is_in_the_last_panel():
    image, mask = square_pair()
    same = panels(render.render_strip(image, mask, View(opacity=1.0, classes=(1,)), prediction=mask), 4)
    assert np.array_equal(same[3], same[1])  # a prediction equal to the mask looks like the mask's overlay
    outlined = panels(render.render_strip(image, mask, View(outline=True), prediction=np.zeros_like(mask)), 4)
    assert np.array_equal(outlined[3], outlined[0])  # nothing predicted: the image as it is
    both = panels(render.render_strip(image, mask, View(), np.zeros((20, 20, 3), np.uint8), mask), 5)
    assert len(both) == 5 and tuple(both[3][0, 0]) == (0, 0, 0)  # label issues, then the model


@pytest.mark.slow
def test_with_a_model_folder_the_review_shows_the_models_prediction(tmp_path):
    from maskpair.training import model as unet
    from maskpair.training.config import TrainConfig
    from maskpair.training.segmenter import Segmenter

    root = write_dataset(tmp_path / "d", [str(k) for k in range(6)])
    data = DataLoader(root, batch_size=1, cache=False)
    Segmenter.from_training(unet.build_model(1, data.n_classes, decoder_filters=(16, 8, 8, 8, 8)), data,
                            TrainConfig()).save(tmp_path / "run")
    app = ReviewApp(root, log_path=tmp_path / "v.jsonl", model=tmp_path / "run", run_audit=False, raise_errors=True)
    assert "prediction" in app.panel_titles.value
    strip = np.asarray(Image.open(io.BytesIO(app.image.value)))
    width = (strip.shape[1] - 3 * render.GAP_PX) // 4
    assert strip.shape[1] == 4 * width + 3 * render.GAP_PX
    assert app.renderer.pair(app.session.current)[3].shape == (32, 32)


def test_large_pairs_are_shown_downscaled_and_zoom_to_full_resolution(tmp_path):
    """Pairs that dataset.json's max_size reduces for training are reviewed at their own size: sampled down to the
    panel, and at the deepest zoom every image pixel gets at least one screen pixel."""
    from published import write_published

    data = write_published(tmp_path / "large", "large", n=2)  # 1536x2048 photographs, max_size 512
    app = ReviewApp(data.root, log_path=tmp_path / "v.jsonl", run_audit=False, raise_errors=True)
    name = app.session.current
    assert app.renderer.shape(name) == app.session.data.original_sizes[name] == (1536, 2048)
    whole = np.asarray(Image.open(io.BytesIO(app.image.value)))
    assert whole.shape[0] <= render.MAX_PANEL_PX  # the whole image, sampled down
    for _ in render.ZOOMS[1:]:
        app.handle_key("+")
    top, left, crop_h, crop_w = render.crop_box((1536, 2048), app.view_settings.zoom, app.view_settings.centre)
    zoomed = np.asarray(Image.open(io.BytesIO(app.image.value)))
    assert zoomed.shape[0] >= crop_h and (zoomed.shape[1] - 2 * render.GAP_PX) // 3 >= crop_w  # >= 1:1


def test_zoom_keeps_the_point_under_the_pointer_and_pan_stays_inside():
    shape = (256, 256)
    assert render.crop_box(shape, 4, (0, 0)) == (0, 0, 64, 64)           # kept inside
    assert render.crop_box(shape, 2, None) == (64, 64, 128, 128)
    view = View()
    x, y = 300, 100  # in the second panel
    point = render.image_point(x, y, shape, view)
    assert 40 < point[1] < 42 and 100 < point[0] < 101
    for zoom in (2, 4, 8):
        zoomed = render.zoomed(view, shape, zoom, point)
        again = render.image_point(x, y, shape, zoomed)
        assert abs(again[0] - point[0]) < 1 and abs(again[1] - point[1]) < 1
    zoomed = render.zoomed(view, shape, 4, point)
    moved = render.panned(zoomed, shape, -1000, 1000)
    assert render.crop_box(shape, 4, moved.centre)[:2] == (0, 192)
    assert render.zoomed(moved, shape, 1) == View()
    strip = render.render_strip(np.zeros(shape, np.uint8), np.zeros(shape, np.uint8), zoomed)
    assert strip.shape[0] == render.panel_size(64, 64)[0] >= render.MIN_PANEL_PX


# ---------------------------------------------------------------- the app's actions and callbacks


@pytest.fixture(scope="module")
def report(example_data):
    return audit.audit_dataset(example_data, progress=False)


@pytest.fixture
def app(example_data, report, tmp_path):
    return ReviewApp(example_data, report, tmp_path / "verdicts.jsonl", reviewer="tester", raise_errors=True)


def assert_no_error_shown(app):
    assert not app.errors and "Traceback" not in app.error_box.value


def browser_event(app, event: dict):
    """An event as the picture's front end sends it: a custom message on the widget's comm."""
    app.image._handle_msg({"content": {"data": {"method": "custom", "content": event}}, "buffers": []})


def key(app, name):
    """A key press on the focused picture."""
    browser_event(app, {"type": "keydown", "key": name})


def test_keys_move_judge_and_undo(app):
    assert app.session.current == "0"
    for name, expected in (("j", "1"), ("ArrowRight", "2"), ("k", "1"), ("ArrowLeft", "0"), ("k", "0")):
        key(app, name)
        assert app.session.current == expected, name
    assert "example 0 " in app.title.value and "<b>0</b>" in app.position_label.value
    key(app, "a")
    key(app, "p")
    assert app.session.current == "2"  # each verdict moved on to the next unreviewed example
    on_disk = ReviewLog(app.session.log.path).latest()
    assert on_disk["0"]["verdict"] == "aligned" and on_disk["1"]["verdict"] == "problem"
    assert on_disk["1"]["reviewer"] == "tester"
    assert "reviewed 2 / 20 · 1 problem" in app.progress.value
    key(app, "u")
    assert app.session.current == "1" and "1" not in ReviewLog(app.session.log.path).verdicts()
    assert "reviewed 1 / 20" in app.progress.value and "undone" in app.notice.value
    key(app, "x")  # not a review key: nothing happens
    assert app.session.current == "1"
    assert_no_error_shown(app)


def test_without_auto_advance_a_verdict_stays(app):
    app.auto_advance.value = False
    key(app, "p")
    assert app.session.current == "0" and "problem" in app.info.value


def test_auto_advance_skips_reviewed_examples(app):
    app.session.log.record("1", "aligned")
    app.session.verdicts = app.session.log.latest()
    key(app, "a")
    assert app.session.current == "2"


def test_reopening_resumes_at_the_first_unreviewed(example_data, report, tmp_path):
    for name in ("0", "1", "3"):
        ReviewLog(tmp_path / "v.jsonl").record(name, "aligned")
    app = ReviewApp(example_data, report, tmp_path / "v.jsonl")
    assert app.session.current == "2" and "reviewed 3 / 20" in app.progress.value


def test_jump_box_table_and_slider(app):
    app.jump.value = "17"  # what Enter in the box does
    assert app.session.current == "17" and app.slider.value == app.session.position["17"]
    app.jump.value = "nope"
    assert app.session.current == "17" and "no single example" in app.notice.value
    app.table.value = "5"  # a click on a row
    assert app.session.current == "5" and "<b>5</b>" in app.position_label.value
    app.slider.value = 12
    assert app.session.current == app.session.order[12] == "12"
    assert any(label.startswith("12 ") for label, _ in app.table.options)
    app.next_button.click()
    app.prev_button.click()
    assert app.session.current == "12"
    assert_no_error_shown(app)


def test_filters_keep_the_current_example_and_refresh_after_verdicts(app):
    flagged = audit.flagged(app.session.report)
    app.jump.value = flagged[1]
    app.flag_filter.value = "flagged"
    assert app.session.order == flagged and app.session.current == flagged[1]  # kept: it is in the new list
    app.flag_filter.value = "empty_mask"
    assert app.session.order == audit.flagged(app.session.report, "empty_mask")
    app.flag_filter.value = "any"
    app.verdict_filter.value = "unreviewed"
    first = app.session.current
    key(app, "a")
    assert first not in app.session.order and app.session.current != first  # the unreviewed list follows the verdicts
    app.verdict_filter.value = "aligned"
    assert app.session.order == [first]
    app.jump.value = "9"  # not in the list: shown anyway, and kept in the list while shown
    assert app.session.current == "9" and "9" in app.session.order
    app.verdict_filter.value = "any"
    app.sort_by.value = "flags"
    assert app.session.order[:len(flagged)] == listing.sort_names(flagged, "flags", app.session.flags, {}) and app.session.current == "9"
    assert_no_error_shown(app)


def test_view_controls_zoom_and_mouse(app):
    first = app.image.value
    app.zoom.value = 4
    assert app.view_settings.zoom == 4 and app.image.value != first
    key(app, "-")
    assert app.view_settings.zoom == 2 and app.zoom.value == 2
    key(app, "0")
    assert app.view_settings == View() and app.image.value == first
    browser_event(app, {"type": "wheel", "deltaY": -120, "dataX": 100, "dataY": 100})
    assert app.view_settings.zoom == 2
    start = app.view_settings.centre
    for kind, x in (("mousedown", 100), ("mouseup", 60)):
        browser_event(app, {"type": kind, "dataX": x, "dataY": 100})
    assert app.view_settings.centre[1] > start[1]  # dragged left: the view moved right
    browser_event(app, {"type": "dblclick", "dataX": 100, "dataY": 100})
    assert app.view_settings.zoom == 4
    key(app, "o")
    assert app.outline.value is True and "outline" in app.panel_titles.value
    app.opacity.value = 0.9
    app.class_boxes[1].value = False
    assert app.view_settings.classes == (2,)
    assert_no_error_shown(app)


def test_error_box_shows_a_failure_and_clears_on_the_next_success(example_data, report, tmp_path, monkeypatch):
    app = ReviewApp(example_data, report, tmp_path / "v.jsonl")
    real_show = app.show
    monkeypatch.setattr(app, "show", lambda name: 1 / 0)
    app.next_button.click()
    assert app.errors and "ZeroDivisionError" in app.error_box.value
    monkeypatch.setattr(app, "show", real_show)
    app.next_button.click()
    assert app.error_box.value == "" and len(app.errors) == 1  # cleared on screen, kept in errors
    strict = ReviewApp(example_data, report, tmp_path / "v.jsonl", raise_errors=True)
    monkeypatch.setattr(strict, "show", lambda name: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        strict.slider.value = 4  # traitlets observers propagate; Button.click's dispatcher would only log


def test_picture_widget_passes_browser_events_on():
    picture = ReviewImage(sent_keys=["a"], value=b"png")
    seen = []
    picture.on_event(seen.append)
    events = [{"type": "keydown", "key": "a"}, {"type": "wheel", "deltaY": 3.0, "dataX": 1.5, "dataY": 2.0}]
    for event in events:
        picture._handle_msg({"content": {"data": {"method": "custom", "content": event}}, "buffers": []})
    command = {"id": "1", "kind": "anywidget-command", "name": "x", "msg": {}}  # anywidget's own protocol
    picture._handle_msg({"content": {"data": {"method": "custom", "content": command}}, "buffers": []})
    assert seen == events
    assert picture.get_state()["sent_keys"] == ["a"] and "review-image" in picture._esm


def test_the_picture_sends_exactly_the_review_keys(app):
    assert app.image.sent_keys == list(review_app.KEYS)
    assert app.image.value[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_error_in_a_picture_event_goes_to_the_red_box(example_data, report, tmp_path, monkeypatch):
    app = ReviewApp(example_data, report, tmp_path / "v.jsonl")
    monkeypatch.setattr(app, "step", lambda delta: 1 / 0)
    key(app, "j")
    assert len(app.errors) == 1 and "ZeroDivisionError" in app.errors[0] and "ZeroDivisionError" in app.error_box.value
    monkeypatch.undo()
    key(app, "j")
    assert app.session.current == "1" and app.error_box.value == ""


def test_export_csv_from_the_app(app):
    key(app, "p")
    path = app.export_csv()
    rows = read_csv(path)
    assert path == app.session.log.path.with_suffix(".csv") and rows[0]["name"] == "0" and rows[0]["reviewer"] == "tester"


def test_pairs_are_read_lazily(example_data, report, tmp_path, monkeypatch):
    reads = []
    real = read_pair
    monkeypatch.setattr(stores, "read_pair", lambda *paths, **kw: reads.append(paths[0]) or real(*paths, **kw))
    app = ReviewApp(example_data, report, tmp_path / "v.jsonl", raise_errors=True)
    for _ in range(3):
        key(app, "j")
    app.renderer.wait()  # let the prefetch thread finish
    assert len(set(reads)) <= 8  # the first pair, the ones shown and their neighbours: not all 20


def test_a_pair_that_cannot_be_read_is_shown_as_such_and_skipped(tmp_path):
    data = write_dataset(tmp_path / "data", ["a", "b", "c"], shape=(32, 32))
    broken = data / "images" / "b.png"
    broken.write_bytes(broken.read_bytes()[:60])  # the header reads, the pixels do not
    app = ReviewApp(data, REPORT, tmp_path / "v.jsonl", raise_errors=True)
    key(app, "j")
    assert app.session.current == "b" and app.image.value  # a placeholder picture
    key(app, "p")
    assert app.session.current == "c" and app.session.log.latest()["b"]["verdict"] == "problem"
    assert_no_error_shown(app)


def test_background_audit_fills_the_flags_in(example_data, report, tmp_path, monkeypatch):
    release, calls = threading.Event(), []

    def slow_audit(data_dir, progress=None, **kwargs):
        calls.append(data_dir)
        progress(1, 20)
        release.wait(30)
        return report

    monkeypatch.setattr(audit, "audit_dataset", slow_audit)
    saved = tmp_path / "out" / "audit.json"
    app = ReviewApp(example_data, None, tmp_path / "v.jsonl", audit_paths=[saved], raise_errors=True)
    assert app.session.flags is None and app.flag_filter.disabled and "running" in app.audit_status.value
    key(app, "j")
    key(app, "a")  # the review goes on while the audit runs
    assert app.session.current == "2" and app.table.options[0][0].endswith("…")
    again = ReviewApp(example_data, None, tmp_path / "v.jsonl", audit_paths=[saved])  # the cell run again
    release.set()
    assert app.wait_for_audit(30) is report and again.wait_for_audit(30) is report
    assert len(calls) == 1  # the second app joined the running audit
    assert not app.flag_filter.disabled and app.session.flags["0"] == report["examples"][0]["flags"]
    assert "flagged" in app.audit_status.value and json.loads(saved.read_text())["examples"]
    assert app.session.current == "2" and "flags:" in app.info.value
    assert_no_error_shown(app)


def test_a_stale_report_is_not_used(example_data, report, tmp_path, monkeypatch):
    fresh = audit.audit_dataset(example_data, progress=False)
    path = audit.write_report({**fresh, "key": "made from other data"}, tmp_path / "audit.json")
    app = ReviewApp(example_data, None, tmp_path / "v.jsonl", audit_paths=[path])
    assert app.session.audit is not None and app.wait_for_audit(120) is not None
    assert audit.current_report(path, example_data) is not None  # the background audit saved a current one
    again = ReviewApp(example_data, None, tmp_path / "v.jsonl", audit_paths=[path])
    assert again.session.audit is None and "reused" in again.audit_status.value


def test_a_current_report_is_used_without_auditing(example_data, report, tmp_path, monkeypatch):
    path = audit.write_report(report, tmp_path / "audit.json")
    monkeypatch.setattr(audit, "current_report", lambda p, data_dir: report if Path(p) == path else None)
    monkeypatch.setattr(audit, "audit_dataset", lambda *a, **k: pytest.fail("the audit ran"))
    app = ReviewApp(example_data, None, tmp_path / "v.jsonl", audit_paths=[tmp_path / "none.json", path])
    assert app.session.report is report and app.session.audit is None and str(path) in app.audit_status.value


def test_label_issues_rank_column_sort_filter_and_picture(example_data, report, tmp_path):
    folder = tmp_path / "issues"
    (folder / "pictures").mkdir(parents=True)
    Image.fromarray(np.full((64, 64, 3), (0, 0, 255), np.uint8)).save(folder / "pictures" / "7.png")
    examples = [{"name": "7", "rank": 1, "score": 0.1, "mislabelled_share": 0.042, "kind": "boundary",
                 "picture": "pictures/7.png"},
                {"name": "3", "rank": 2, "score": 0.4, "kind": "", "picture": ""}]
    (folder / "label_issues.json").write_text(json.dumps({"examples": examples}))
    app = ReviewApp(example_data, report, tmp_path / "v.jsonl", label_issues=folder / "label_issues.json",
                    raise_errors=True)
    assert "rank" in app.table_header.value and "rank" in app.sort_by.options
    # opened sorted by rank, at the most suspect example: the top of the ranking is reviewed first
    assert app.sort_by.value == "rank" and app.session.order[:2] == ["7", "3"] and app.session.current == "7"
    app.sort_by.value = "name"
    assert app.session.order[:2] == ["0", "1"]
    app.sort_by.value = "rank"
    assert app.session.order[:2] == ["7", "3"]
    app.rank_filter.value = 1
    assert app.session.order == ["7"] and app.session.current == "7"
    picture = np.asarray(Image.open(__import__("io").BytesIO(app.image.value)).convert("RGB"))
    assert tuple(panels(picture, 4)[3][5, 5]) == (0, 0, 255)
    assert "rank 1" in app.panel_titles.value
    assert "rank 1, boundary; 4.2% of its labelled pixels look mislabelled" in app.info.value
    assert_no_error_shown(app)


def test_a_failing_background_audit_is_shown_not_lost(example_data, tmp_path, monkeypatch):
    def broken_audit(data_dir, progress=None, **kwargs):
        raise DataError("images/3.png: unreadable image")

    monkeypatch.setattr(audit, "audit_dataset", broken_audit)
    app = ReviewApp(example_data, None, tmp_path / "v.jsonl")
    assert app.wait_for_audit(30) is None
    assert "DataError" in app.errors[0] and "images/3.png" in app.error_box.value
    assert "audit failed: DataError: images/3.png" in app.audit_status.value
    key(app, "j")  # the review goes on without flags; the status line keeps the reason
    assert app.session.current == "1" and app.error_box.value == "" and "audit failed" in app.audit_status.value


@pytest.mark.parametrize("layout", ["rgb_ignore", "mixed_sizes", "nnunet"])
def test_the_app_on_other_layouts(layout, tmp_path):
    """RGB images with 11 classes and ignore pixels, images of several sizes, nnU-Net's folders."""
    data = write_layout(tmp_path / layout, layout, n=12)
    app = ReviewApp(data, None, tmp_path / "v.jsonl", run_audit=False, raise_errors=True)
    assert len(app.class_boxes) == len(app.session.data.labels) - 1
    shapes, hatched = set(), 0
    for _ in app.session.names:
        image, mask = app.renderer.pair(app.session.current)[:2]
        shapes.add(mask.shape)
        picture = np.asarray(Image.open(__import__("io").BytesIO(app.image.value)).convert("RGB"))
        top, left, crop_h, crop_w = render.crop_box(mask.shape, 1)
        assert picture.shape[0] == render.panel_size(crop_h, crop_w)[0]
        if layout == "rgb_ignore":
            assert (image[..., 0] != image[..., 1]).any()  # kept in colour
            if (mask == render.IGNORE_INDEX).any():
                hatched += 1
                assert (panels(picture)[2] == render.HATCH_RGB).all(axis=2).any()
        key(app, "+")
        key(app, "0")
        key(app, "j")
    assert len(shapes) > 1 or layout != "mixed_sizes"
    assert hatched or layout != "rgb_ignore"
    key(app, "p")
    assert app.session.log.latest()[app.session.names[-1]]["verdict"] == "problem"
    assert_no_error_shown(app)


def test_caches_stay_bounded_in_items_and_bytes():
    cache = render.LRU(3, 100, sizeof=len)
    for key in "abcd":
        cache.put(key, b"x" * 10)
    assert len(cache) == 3 and "a" not in cache and cache.nbytes == 30
    cache.get("b")
    cache.put("e", b"x" * 90)  # over 100 bytes: the least recently used go first
    assert "b" in cache and "c" not in cache and "d" not in cache and cache.nbytes == 100
    cache.put("f", b"x" * 500)  # one value larger than the budget is still kept, alone
    assert len(cache) == 1 and "f" in cache


# ---------------------------------------------------------------- what most needs a look, as a picture


def drawn_names(sheet_path, data_dir, n_tiles: int, columns: int = 6, thumb: int = 160) -> list[str]:
    """Which pair each of the first n_tiles tiles of a sheet shows: the pair whose image the tile matches (its
    labels' outlines aside), read back from the PNG."""
    data = DataLoader(data_dir, batch_size=1, cache=False, progress=False)
    images = {name: render.display_rgb(data.raw_pair(name)[0]).astype(int) for name in data.names}
    with Image.open(sheet_path) as picture:
        sheet = np.asarray(picture.convert("RGB")).astype(int)
    found = []
    for k in range(n_tiles):
        x, y = (k % columns) * thumb, (k // columns) * (thumb + audit_sheet.CAPTION_HEIGHT)

        def mismatch(image, x=x, y=y):
            height, width = image.shape[:2]
            return float(np.mean(np.abs(sheet[y:y + height, x:x + width] - image).max(axis=2) > 8))

        best = min(images, key=lambda name: mismatch(images[name]))
        assert mismatch(images[best]) < 0.5, f"tile {k} matches no image"
        found.append(best)
    return found


def test_needs_a_look_puts_the_ranking_first_then_flags_then_problems():
    flags = {"a": [], "b": ["empty_mask"], "c": ["misaligned:flip_lr", "missing_class:x", "duplicate_of:a"], "d": []}
    verdicts = {"d": {"verdict": "problem"}, "b": {"verdict": "aligned"}}
    issues = {"c": {"rank": 2, "kind": "boundary"}, "a": {"rank": 1, "kind": ""}, "d": {"rank": 3, "kind": "x"}}
    assert needs_a_look(flags, verdicts, issues, top=2) == [
        ("a", ["a", "rank 1"]), ("c", ["c", "rank 2: boundary", "+3 more flags"]),
        ("b", ["b · aligned", "empty_mask"]), ("d", ["d · problem", "rank 3: x"])]
    assert needs_a_look(None, verdicts) == [("d", ["d · problem"])]  # no audit report: the problems only


def test_review_sheet_draws_the_flagged_and_problem_pairs(five, tmp_path):
    session = open_session(five, tmp_path)
    session.use_report(FIVE_REPORT)
    session.go_to("e")
    session.record("problem", "cut")
    sheet = review_sheet(session, tmp_path / "out" / "look.png", columns=4, thumb=64)
    assert sheet.names == ["b", "d", "e"] and sheet.left_out == 0
    assert sheet.captions == [["b", "empty_mask"], ["d", "misaligned:flip_lr", "missing_class:2"], ["e · problem"]]
    assert sheet.text.startswith("3 pair(s) need a look: the 2 pair(s) the audit flags (caption: their flags); "
                                 "the 1 pair(s) a reviewer marked problem.")
    with Image.open(sheet.path) as picture:
        assert picture.size == (4 * 64, 64 + audit_sheet.CAPTION_HEIGHT)  # one row of 4 columns
    assert drawn_names(sheet.path, five, 3, columns=4, thumb=64) == ["b", "d", "e"]
    fewer = review_sheet(session, tmp_path / "fewer.png", max_tiles=2)
    assert fewer.names == ["b", "d"] and fewer.left_out == 1 and "The first 2 are drawn, 1 left out." in fewer.text


def test_review_sheet_says_when_nothing_needs_a_look(five, tmp_path):
    session = open_session(five, tmp_path)
    session.load_audit(run_audit=False)
    sheet = review_sheet(session, tmp_path / "look.png")
    assert sheet.names == [] and sheet.text == ("0 pair(s) need a look: no audit flags (audit: none (no flags)); "
                                                "the 0 pair(s) a reviewer marked problem.")
    with Image.open(sheet.path) as picture:
        assert picture.size[0] > 0 and np.asarray(picture.convert("L")).min() < 128  # text on white


def planted_blobs(root) -> Path:
    """Twelve blob scenes with two planted problems: scene3's mask moved 7 px right, scene7's mask empty."""
    root = write_blobs(root, n=12, size=64)
    mask = np.asarray(Image.open(root / "masks" / "scene3.png"))
    Image.fromarray(np.roll(mask, 7, axis=1)).save(root / "masks" / "scene3.png")
    Image.fromarray(np.zeros_like(mask)).save(root / "masks" / "scene7.png")
    return root


def test_notebook_02_run_headless_reports_what_needs_a_look(tmp_path):
    """The user's path: notebook 02 executed by papermill on data with planted problems, a review log holding a
    problem verdict and a label-issue ranking, no audit report yet (the audit runs in the background and the
    picture's cell waits for it, as audit_wait_s asks): the picture shows the ranked, flagged and problem pairs,
    in the notebook too."""
    data = planted_blobs(tmp_path / "blobs")
    log = tmp_path / "verdicts.jsonl"
    ReviewLog(log).record("scene5", "problem", "labels too small", reviewer="ana")
    issues = tmp_path / "issues" / "label_issues.json"
    issues.parent.mkdir()
    issues.write_text(json.dumps({"examples": [{"name": "scene9", "rank": 1, "kind": "boundary", "picture": ""},
                                               {"name": "scene3", "rank": 2, "kind": "missing structure"}]}))
    out = tmp_path / "out" / "02_verify_alignment"
    executed = tmp_path / "out" / "02_verify_alignment.ipynb"
    notebooks_cli.execute_notebook(notebooks_cli.NOTEBOOK_DIR / "02_verify_alignment.ipynb", executed, {
        "data_dir": str(data), "output_dir": str(out), "review_log": str(log), "reviewer": "tester",
        "label_issues": str(issues), "audit_wait_s": 120})

    report = json.loads((out / "audit.json").read_text())  # the background audit's report, saved
    assert audit.flagged(report) == ["scene3", "scene7"]
    assert {entry["name"]: entry["flags"] for entry in report["examples"]}["scene3"][0].startswith("misaligned:")
    picture = out / "needs_a_look.png"
    with Image.open(picture) as sheet:
        assert sheet.size == (6 * 160, 160 + audit_sheet.CAPTION_HEIGHT)  # four tiles: one row of six columns
    assert drawn_names(picture, data, 4) == ["scene9", "scene3", "scene7", "scene5"]

    nb = nbformat.read(executed, as_version=4)
    cell = next(cell for cell in nb.cells if "review_sheet(" in cell.source)
    text = "".join(output.get("text", "") for output in cell.outputs)
    assert text.startswith("4 pair(s) need a look: the top 2 of the label-issue ranking (caption: rank and kind); "
                           "the 2 pair(s) the audit flags (caption: their flags); the 1 pair(s) a reviewer marked")
    shown = [output["data"]["image/png"] for output in cell.outputs if "image/png" in output.get("data", {})]
    assert len(shown) == 1 and base64.b64decode(shown[0]) == picture.read_bytes()
    conclusion = "".join(output.get("text", "") for output in nb.cells[-1].outputs)
    assert "flags 2 of 12 pairs: scene3, scene7" in conclusion and "1 marked as a problem (scene5)" in conclusion
    assert not [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs
                if output.output_type == "error"]
