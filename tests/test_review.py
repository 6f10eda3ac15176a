"""review.py: the durable verdict log (including a kill test) and the widget callbacks, without a browser."""
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import audit
import review
from review import ReviewApp, ReviewLog

# ---------------------------------------------------------------- the verdict log


def test_log_round_trip_keeps_awkward_notes(tmp_path):
    log = ReviewLog(tmp_path / "sub" / "verdicts.jsonl")
    note = 'shifted, "a bit"\nleft; also \u00e9'
    log.record("3", "problem", note)
    log.record("4", "aligned")
    log.record("3", "aligned", "second look")
    verdicts = ReviewLog(log.path).verdicts()
    assert verdicts["3"]["verdict"] == "aligned" and verdicts["3"]["note"] == "second look"
    assert [e["note"] for e in log.entries()][0] == note
    assert set(verdicts["4"]) == {"verdict", "note", "time"}


def test_log_refuses_unknown_verdicts(tmp_path):
    log = ReviewLog(tmp_path / "v.jsonl")
    with pytest.raises(ValueError, match="verdict must be one of"):
        log.record("1", "maybe")
    assert log.verdicts() == {}


def test_torn_last_line_is_ignored_and_cut_before_the_next_append(tmp_path):
    log = ReviewLog(tmp_path / "v.jsonl")
    log.record("1", "aligned")
    with open(log.path, "ab") as handle:
        handle.write(b'{"name": "2", "verd')
    assert list(log.verdicts()) == ["1"]
    log.record("2", "problem")
    assert log.verdicts()["2"]["verdict"] == "problem"
    assert all(json.loads(line) for line in log.path.read_text().splitlines())


WRITER = """
import sys
sys.path.insert(0, {project!r})
from review import ReviewLog
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
        code = WRITER.format(project=str(review.loader.PROJECT_DIR), path=str(path), start=start)
        writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        acked = [writer.stdout.readline()]  # wait until it is writing
        time.sleep(float(rng.uniform(0.05, 0.4)))
        writer.send_signal(signal.SIGKILL)
        acked += writer.stdout.readlines()
        writer.wait()
        acked = [int(line) for line in acked if line.strip()]
        verdicts = ReviewLog(path).verdicts()  # must load
        missing = [k for k in acked if str(k) not in verdicts]
        assert not missing, f"acknowledged but lost: {missing[:5]}"
        assert verdicts[str(acked[-1])]["note"] == f'note, "quoted"\nline {acked[-1]}'
        start = acked[-1] + 10
    assert len(verdicts) > 5


# ---------------------------------------------------------------- plain logic


def test_filters_and_progress():
    report = {"examples": [{"name": "a", "flags": ["empty_mask"]}, {"name": "b", "flags": []},
                           {"name": "c", "flags": ["misaligned:flip_lr"]}]}
    verdicts = {"a": {"verdict": "aligned"}}
    names = ["a", "b", "c"]
    assert review.filter_names(names, report, verdicts, "flagged") == ["a", "c"]
    assert review.filter_names(names, report, verdicts, "unreviewed") == ["b", "c"]
    assert review.filter_names(names, report, verdicts, "all") == names
    assert review.progress_text(names, {**verdicts, "elsewhere": {}}) == "reviewed 1 / 3"
    with pytest.raises(ValueError):
        review.filter_names(names, report, verdicts, "odd")


def test_render_views_fill_and_contour():
    image = np.zeros((20, 20), np.uint8)
    mask = np.zeros((20, 20), np.uint8)
    mask[5:15, 5:15] = 1
    fill = review.render_views(image, mask, opacity=1.0, classes=[1], mode="fill")
    contour = review.render_views(image, mask, classes=[1], mode="contour")
    hidden = review.render_views(image, mask, classes=[], mode="fill")
    assert fill.shape == (20, 60, 3)
    assert tuple(fill[10, 30]) == review.CLASS_COLOURS[1]           # overlay, inside
    assert tuple(contour[10, 30]) == (0, 0, 0) and tuple(contour[5, 30]) == review.CLASS_COLOURS[1]
    assert not hidden[:, 20:].any()


# ---------------------------------------------------------------- the widget's callbacks


@pytest.fixture(scope="module")
def report(example_data):
    return audit.audit_dataset(example_data)


@pytest.fixture
def app(example_data, report, tmp_path):
    return ReviewApp(example_data, report, tmp_path / "verdicts.jsonl", raise_errors=True)


def assert_no_error_shown(app):
    assert not app.errors and "Traceback" not in app.error_box.value


def test_slider_buttons_and_filter_change_the_example(app):
    first = app.view.value
    app.slider.value = 3
    assert app.current == "3" and "example 3 " in app.title.value and app.view.value != first
    app.next_button.click()
    assert app.current == "4"
    app.prev_button.click()
    app.prev_button.click()
    assert app.current == "2"
    app.filter.value = "flagged"
    assert app.names == audit.flagged(app.report) and app.current in app.names
    app.mode.value = "contour"
    app.opacity.value = 0.9
    app.class_boxes[1].value = False
    assert_no_error_shown(app)


def test_verdict_button_writes_the_log_and_progress(app):
    app.slider.value = 5
    app.note.value = 'empty, "really"\nyes'
    app.verdict_buttons["problem"].click()
    assert ReviewLog(app.log.path).verdicts()["5"]["note"] == 'empty, "really"\nyes'
    assert app.progress.value == "reviewed 1 / 20" and "problem" in app.info.value
    app.filter.value = "unreviewed"
    assert "5" not in app.names
    assert_no_error_shown(app)


def test_reopening_shows_earlier_verdicts(example_data, report, tmp_path):
    ReviewLog(tmp_path / "v.jsonl").record("0", "aligned")
    app = ReviewApp(example_data, report, tmp_path / "v.jsonl")
    assert app.progress.value == "reviewed 1 / 20" and "aligned" in app.info.value


def test_callback_exception_is_shown_and_kept(example_data, report, tmp_path, monkeypatch):
    app = ReviewApp(example_data, report, tmp_path / "v.jsonl")
    monkeypatch.setattr(app, "refresh", lambda: 1 / 0)
    app.slider.value = 2
    assert app.errors and "ZeroDivisionError" in app.error_box.value
    strict = ReviewApp(example_data, report, tmp_path / "v.jsonl", raise_errors=True)
    monkeypatch.setattr(strict, "refresh", lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        strict.slider.value = 4  # traitlets observers propagate; Button.click's dispatcher would only log
