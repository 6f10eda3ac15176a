"""The review UI of notebook 02 (ipywidgets + the `picture.ReviewImage` anywidget): one example at a time as
image | overlay | labels (and the label-issues picture when given), zoomable; after a click on the picture, keys
judge and move (KEYS) until the focus goes elsewhere.

The widgets only show a `ReviewSession` (session.py: the order, filters, verdicts in the durable log, the audit's
flags) and forward the reviewer's events to it; a `PairRenderer` (render.py) draws the pictures, reading pairs one
at a time and prerendering the next ones, so the UI scales to thousands of pairs. The audit's flags come from a
current report or from an audit running in a background thread: the UI appears at once and fills them in later.
"""
from __future__ import annotations

import html
import time
import traceback
from dataclasses import replace
from pathlib import Path

import numpy as np

from maskpair.review.listing import (
    SORT_KEYS,
    VERDICT_FILTERS,
    describe,
    table_header,
    table_row,
)
from maskpair.review.log import VERDICTS
from maskpair.review.render import (
    ZOOMS,
    PairRenderer,
    View,
    class_rgb,
    image_point,
    panned,
    zoomed,
)
from maskpair.review.session import ReviewSession

# keys (KeyboardEvent.key), while the picture has the focus
KEYS = {"ArrowRight": "next", "j": "next", "ArrowLeft": "previous", "k": "previous",
        "a": "aligned", "p": "problem", "u": "undo",
        "+": "zoom in", "=": "zoom in", "-": "zoom out", "0": "fit", "o": "outline/fill"}
TABLE_ROWS = 50             # rows of the example table sent to the browser at once (a page around the current)
STATUS_INTERVAL_S = 0.5     # the background audit's progress line is updated at most this often


CSS = """<style>
.review-table select { font-family: monospace; font-size: 12px; }
.review-table-header { font-family: monospace; font-size: 12px; white-space: pre; }
.review-panel-titles > .widget-html-content { display: grid; width: 100%; text-align: center; font-weight: bold; }
.review-swatch { display: inline-block; width: 12px; height: 12px; margin: 0 3px 0 10px; vertical-align: -1px;
                 border: 1px solid #555; }
</style>"""


class ReviewApp:
    """The review UI: browse examples (keys, slider, table, jump box), see image | overlay | labels zoomed,
    read the audit's findings, record verdicts (`a`/`p`, undo `u`) in a durable ReviewLog.

    data_dir: the dataset; report: an audit report (dict) or None: the first current report among
    `audit_paths` is used, else the audit runs in a background thread (its report written to audit_paths[0])
    and the flags are filled in when it finishes (run_audit=False: no flags). log_path: the verdict log
    (default beside the data); reviewer: written with each verdict (default: the OS user); label_issues:
    optional label_issues.json (a rank column, sorting/filtering by it, its picture as a panel); model: optional
    model folder (`maskpair train --out DIR`: DIR or DIR/model) whose prediction of each example is the last panel,
    drawn as the mask is (loading it starts TensorFlow). The state is `session` (a ReviewSession); `widget` is what the notebook shows.
    Callback errors are shown in a red box above the UI (cleared by the next action that succeeds) and kept
    in `errors`; `raise_errors=True` (tests) re-raises them instead.
    """

    def __init__(self, data_dir, report: dict | None = None, log_path=None, *, reviewer: str | None = None,
                 label_issues=None, model=None, audit_paths=(), run_audit: bool = True, raise_errors: bool = False):
        self.session = ReviewSession(data_dir, log_path, reviewer=reviewer, label_issues=label_issues)
        segmenter = None
        if model:
            from maskpair.training.segmenter import Segmenter  # TensorFlow only when a model is asked for

            segmenter = Segmenter.load(model)
        self.renderer = PairRenderer(self.session.data, self.session.issues, segmenter)
        self.raise_errors = raise_errors
        self.errors: list[str] = []
        self.view_settings = View(classes=tuple(range(1, len(self.session.data.labels))))
        self._syncing = False  # set while the app itself moves widgets, so their observers stay quiet
        self._drag_start = None
        self._status_shown_at = 0.0
        self._build_widgets()
        with self.session.lock:  # a background audit's report waits until the UI is drawn, then redraws it
            self.session.listeners.append(self._on_audit_event)
            self.session.load_audit(report, audit_paths, run_audit)
            self._update_flag_choices()
            self._update_audit_status()
            self.show(self.session.current)

    # -- building the widgets

    def _build_widgets(self):
        """Create every widget and wire it to the actions (each wrapped by _guard)."""
        import ipywidgets as w

        from maskpair.review.picture import ReviewImage

        session, labels = self.session, self.session.data.labels
        self.error_box = w.HTML("").add_class("review-error")
        self.notice = w.HTML("").add_class("review-notice")
        self.title = w.HTML().add_class("review-title")
        self.progress = w.HTML(layout=w.Layout(margin="0 24px 0 4px")).add_class("review-progress")
        self.audit_status = w.HTML().add_class("review-audit")
        self.prev_button = w.Button(description="◀ previous", layout=w.Layout(width="100px"))
        self.next_button = w.Button(description="next ▶", layout=w.Layout(width="100px"))
        self.slider = w.IntSlider(0, 0, max(0, len(session.names) - 1), readout=False, description="example",
                                  continuous_update=False, layout=w.Layout(width="340px")).add_class("review-slider")
        self.position_label = w.HTML(layout=w.Layout(margin="0 8px")).add_class("review-position")
        self.jump = w.Text(placeholder="jump to a name ⏎", continuous_update=False,
                           layout=w.Layout(width="180px")).add_class("review-jump")
        self.auto_advance = w.Checkbox(session.auto_advance, description="after a verdict, show the next unreviewed",
                                       indent=False, layout=w.Layout(width="300px"))
        self.panel_titles = w.HTML().add_class("review-panel-titles")
        self.image = ReviewImage(sent_keys=list(KEYS), layout=w.Layout(width="100%"))
        self.legend = w.HTML(self._legend_html(labels), layout=w.Layout(margin="0 16px 0 4px"))
        self.legend.add_class("review-legend")
        self.key_legend = w.HTML(
            "<b>keys</b> after a click on the picture, while it has a blue outline: <kbd>→</kbd>/<kbd>j</kbd> next"
            " · <kbd>←</kbd>/<kbd>k</kbd> previous · <kbd>a</kbd> aligned · <kbd>p</kbd> problem · <kbd>u</kbd> "
            "undo · <kbd>+</kbd>/<kbd>-</kbd> zoom · <kbd>0</kbd> fit · <kbd>o</kbd> outline/fill; a click "
            "elsewhere, <kbd>Esc</kbd> or <kbd>Tab</kbd> ends it · wheel: zoom at the pointer · drag: pan · "
            "double-click: zoom in there").add_class("review-keys")
        self.verdict_buttons = {v: w.Button(description=f"{v} ({v[0]})", button_style="success" if v == "aligned"
                                            else "danger").add_class(f"verdict-{v}") for v in VERDICTS}
        self.undo_button = w.Button(description="undo (u)").add_class("verdict-undo")
        self.note = w.Textarea(placeholder="note for the next verdict (optional)", rows=1,
                               layout=w.Layout(width="320px"))
        self.export_button = w.Button(description="export CSV", icon="download")
        self.zoom = w.ToggleButtons(options=[(f"{z}x", z) for z in ZOOMS], value=1, description="zoom",
                                    style={"button_width": "44px"})
        self.outline = w.ToggleButtons(options=[("fill", False), ("outline", True)], value=False,
                                       style={"button_width": "76px"})
        self.opacity = w.FloatSlider(0.4, min=0, max=1, step=0.05, description="opacity",
                                     layout=w.Layout(width="260px"))
        self.class_boxes = {k: w.Checkbox(k in self.view_settings.classes, description=labels[k], indent=False,
                                          layout=w.Layout(width="auto")) for k in range(1, len(labels))}
        self.flag_filter = w.Dropdown(options=[("any", "any")], value="any", description="flags",
                                      disabled=True, layout=w.Layout(width="230px"))
        self.verdict_filter = w.Dropdown(options=VERDICT_FILTERS, value=session.verdict_filter, description="verdict",
                                         layout=w.Layout(width="200px"))
        self.rank_filter = w.BoundedIntText(session.max_rank, min=0, max=max(1, len(session.names)),
                                            description="rank ≤",
                                            layout=w.Layout(width="150px", display="" if session.ranks else "none"))
        self.sort_by = w.Dropdown(options=[key for key in SORT_KEYS if key != "rank" or session.ranks],
                                  value=session.sort_by, description="sort by", layout=w.Layout(width="200px"))
        self.descending = w.Checkbox(session.descending, description="descending", indent=False,
                                     layout=w.Layout(width="110px"))
        self.table_header = w.HTML().add_class("review-table-header")
        self.table = w.Select(options=[], rows=14, layout=w.Layout(width="620px")).add_class("review-table")
        self.table_position = w.HTML()
        self.info = w.HTML(layout=w.Layout(width="420px", margin="0 0 0 16px")).add_class("review-info")

        guard = self._guard
        self.image.on_event(guard(self.handle_event))
        self.prev_button.on_click(guard(lambda _: self.step(-1)))
        self.next_button.on_click(guard(lambda _: self.step(1)))
        self.slider.observe(guard(self._on_slider), names="value")
        self.table.observe(guard(self._on_table), names="value")
        self.jump.observe(guard(lambda change: self.jump_to(change["new"])), names="value")
        self.auto_advance.observe(guard(self._on_auto_advance), names="value")
        for verdict, button in self.verdict_buttons.items():
            button.on_click(guard(lambda _, v=verdict: self.record(v)))
        self.undo_button.on_click(guard(lambda _: self.undo()))
        self.export_button.on_click(guard(lambda _: self.export_csv()))
        for control in (self.zoom, self.outline, self.opacity, *self.class_boxes.values()):
            control.observe(guard(self._on_view_control), names="value")
        for control in (self.flag_filter, self.verdict_filter, self.rank_filter, self.sort_by, self.descending):
            control.observe(guard(self._on_filter_control), names="value")

        def row(children, align="center"):
            return w.HBox(children, layout=w.Layout(flex_flow="row wrap", align_items=align))

        self.widget = w.VBox([
            w.HTML(CSS), self.error_box, self.title,
            row([self.progress, self.audit_status]),
            row([self.prev_button, self.slider, self.position_label, self.next_button, self.jump, self.auto_advance]),
            row([*self.verdict_buttons.values(), self.undo_button, self.note, self.export_button]),
            self.notice, self.key_legend, self.panel_titles, self.image,
            row([self.legend, self.zoom, self.outline, self.opacity, *self.class_boxes.values()]),
            row([w.VBox([row([self.flag_filter, self.verdict_filter, self.rank_filter]),
                         row([self.sort_by, self.descending]), self.table_header, self.table, self.table_position]),
                 self.info], align="flex-start"),
        ], layout=w.Layout(width="100%"))

    def _legend_html(self, labels) -> str:
        """Class colours as swatches, and the ignore hatch."""
        swatch = "<span class='review-swatch' style='background:{}'></span>{}"
        items = [swatch.format("#{:02x}{:02x}{:02x}".format(*class_rgb(k)), html.escape(labels[k]))
                 for k in range(1, len(labels))]
        items.append(swatch.format("repeating-linear-gradient(45deg,#6e6e6e 0 3px,#bebebe 3px 6px)", "ignore"))
        return "<b>classes</b>" + "".join(items)

    def _guard(self, callback):
        """Wrap a callback: one at a time (the audit thread may finish meanwhile); an exception is shown in the
        red box and kept (or re-raised in tests); a callback that succeeds clears the box."""

        def guarded(*args):
            with self.session.lock:
                echo = self._syncing  # an observer fired by the app moving its own widgets: not a user action
                try:
                    callback(*args)
                except Exception:
                    self._show_error("review callback failed", traceback.format_exc())
                    if self.raise_errors:
                        raise
                else:
                    if self.error_box.value and not echo:
                        self.error_box.value = ""

        return guarded

    def _show_error(self, what: str, text: str):
        """Keep an error and show it in the red box."""
        self.errors.append(text)
        self.error_box.value = (f"<pre style='color:white;background:#b00020;padding:6px;white-space:pre-wrap'>"
                                f"{html.escape(what)}:\n{html.escape(text)}</pre>")

    # -- showing the session

    def show(self, name: str):
        """Show example `name` (kept in the list even if the filters exclude it)."""
        self.session.go_to(name)
        self._refresh()

    def _refresh(self):
        """Every widget from the session's state; the picture first: it is what the reviewer waits for."""
        session, name = self.session, self.session.current
        self.image.value = self.renderer.png(name, self.view_settings)
        position = session.position[name]
        self.title.value = (f"<h3 style='margin:4px 0'>example {html.escape(name)} ({position + 1} / "
                            f"{len(session.order)} {html.escape(session.filter_text())})</h3>")
        self._syncing = True
        try:
            self.slider.max = max(0, len(session.order) - 1)
            self.slider.value = position
            self._update_table()
        finally:
            self._syncing = False
        self.position_label.value = f"<b>{html.escape(name)}</b>"
        self.info.value = describe(session.entries.get(name), session.verdicts.get(name), session.issues.get(name),
                                   audited=session.report is not None)
        self.notice.value = (f"<span style='color:#8a4b00'>{html.escape(session.notice)}</span>"
                             if session.notice else "")
        self.progress.value = html.escape(session.progress())
        self._update_panel_titles()
        self.renderer.prefetch(session.upcoming(), self.view_settings)

    def _update_panel_titles(self):
        """Titles over the panels, with the zoom and the label-issue score when there is one."""
        view, issues = self.view_settings, self.session.issues
        mode = "outline" if view.outline else f"fill {view.opacity:.0%}"
        titles = ["image" + (f" · {view.zoom}x" if view.zoom > 1 else ""), f"overlay ({mode})", "labels"]
        if issues:
            issue = issues.get(self.session.current)
            titles.append(f"label issues (rank {issue['rank']})" if issue and "rank" in issue else "label issues")
        if self.renderer.segmenter is not None:
            titles.append("model's prediction")
        cells = "".join(f"<div>{html.escape(title)}</div>" for title in titles)
        value = f"<div style='display:grid;grid-template-columns:repeat({len(titles)},1fr)'>{cells}</div>"
        if self.panel_titles.value != value:
            self.panel_titles.value = value

    def _update_table(self):
        """The page of the table around the current example (only sent when it changed)."""
        session = self.session
        start, page = session.page(TABLE_ROWS)
        width = max(4, min(24, max(map(len, page), default=4)))
        with_rank = bool(session.ranks)
        options = [(table_row(name, session.flags.get(name) if session.flags is not None else None,
                              session.verdicts.get(name), session.ranks.get(name), with_rank, width), name)
                   for name in page]
        if options != list(self.table.options):
            self.table.options = options
            self.table_header.value = html.escape(table_header(with_rank, width))
        self.table.value = session.current
        self.table_position.value = (f"<small>rows {start + 1}–{start + len(page)} of {len(session.order)}; "
                                     f"click a row to show it</small>")

    def _update_flag_choices(self):
        """The flag filter's choices with their counts, enabled once there is a report."""
        self._syncing = True
        try:
            self.flag_filter.options = self.session.flag_choices()
            self.flag_filter.value = self.session.flag_filter
            self.flag_filter.disabled = self.session.flags is None
        finally:
            self._syncing = False

    def _update_audit_status(self):
        status = html.escape(self.session.audit_status())
        self.audit_status.value = (f"<span style='color:#b00020'>{status}</span>"
                                   if self.session.audit_failure is not None else status)

    # -- actions (plain methods: tests call them directly)

    def step(self, delta: int):
        """Move by delta within the current list (clamped at its ends)."""
        self.session.step(delta)
        self.show(self.session.current)

    def record(self, verdict: str):
        """Write the verdict (with the note) for the current example durably; then the next unreviewed one."""
        self.session.record(verdict, self.note.value)
        self.note.value = ""
        self.show(self.session.current)

    def undo(self):
        """Take back the last verdict in the log and show that example again."""
        self.session.undo()
        self.show(self.session.current)

    def jump_to(self, text: str):
        """Show the example whose name is typed (exact, else a unique match ignoring case or a unique part)."""
        if text.strip():
            self.session.jump_to(text)
            self.show(self.session.current)

    def export_csv(self, path=None) -> Path:
        """Write the verdicts (latest per name, in name order) to CSV, by default beside the log."""
        path = self.session.export_csv(path)
        self._refresh()
        return path

    def _on_filter_control(self, change):
        """A filter or the sort changed by the reviewer."""
        if self._syncing:
            return
        self.session.set_filters(flag=self.flag_filter.value, verdict=self.verdict_filter.value,
                                 max_rank=self.rank_filter.value, sort_by=self.sort_by.value,
                                 descending=self.descending.value)
        self.show(self.session.current)

    def _on_auto_advance(self, change):
        self.session.auto_advance = bool(change["new"])

    def _on_slider(self, change):
        if not self._syncing and 0 <= change["new"] < len(self.session.order):
            self.show(self.session.order[change["new"]])

    def _on_table(self, change):
        if not self._syncing and change["new"] is not None and change["new"] != self.session.current:
            self.show(change["new"])

    # -- the view: zoom, pan, outline, classes

    def _shape(self) -> tuple[int, int]:
        """(H, W) of the current example."""
        return self.renderer.shape(self.session.current)

    def _on_view_control(self, change):
        """Zoom, outline/fill, opacity or a class box changed by the reviewer."""
        if self._syncing:
            return
        view = self.view_settings
        if change["owner"] is self.zoom:
            view = zoomed(view, self._shape(), change["new"])
        self._set_view(replace(view, outline=self.outline.value, opacity=self.opacity.value,
                               classes=tuple(k for k, box in self.class_boxes.items() if box.value)))

    def _set_view(self, view: View):
        """Redraw with new view settings (zoom, outline, opacity, classes), keeping the controls in step."""
        self.view_settings = view
        self._syncing = True
        try:
            self.zoom.value = view.zoom
            self.outline.value = view.outline
        finally:
            self._syncing = False
        self.show(self.session.current)

    def handle_event(self, event: dict):
        """One browser event from the picture (ReviewImage): keys, wheel zoom, drag to pan, double-click zoom."""
        kind = event.get("type")
        if kind == "keydown":
            self.handle_key(event.get("key", ""))
        elif kind == "wheel":
            point = image_point(event["dataX"], event["dataY"], self._shape(), self.view_settings)
            index = ZOOMS.index(self.view_settings.zoom) + (1 if event.get("deltaY", 0) < 0 else -1)
            self._set_view(zoomed(self.view_settings, self._shape(), ZOOMS[int(np.clip(index, 0, len(ZOOMS) - 1))],
                                  point))
        elif kind == "dblclick":
            point = image_point(event["dataX"], event["dataY"], self._shape(), self.view_settings)
            index = ZOOMS.index(self.view_settings.zoom) + 1
            self._set_view(zoomed(self.view_settings, self._shape(), ZOOMS[index % len(ZOOMS)], point))
        elif kind == "mousedown":
            self._drag_start = (event["dataX"], event["dataY"])
        elif kind == "mouseup" and self._drag_start is not None:
            (x0, y0), self._drag_start = self._drag_start, None
            start = image_point(x0, y0, self._shape(), self.view_settings)
            end = image_point(event["dataX"], event["dataY"], self._shape(), self.view_settings)
            if abs(end[0] - start[0]) + abs(end[1] - start[1]) >= 1:  # a drag, not a click
                self._set_view(panned(self.view_settings, self._shape(), start[0] - end[0], start[1] - end[1]))

    def handle_key(self, key: str):
        """Act on one key (KEYS); other keys do nothing."""
        action = KEYS.get(key)
        if action in ("next", "previous"):
            self.step(1 if action == "next" else -1)
        elif action in VERDICTS:
            self.record(action)
        elif action == "undo":
            self.undo()
        elif action in ("zoom in", "zoom out", "fit"):
            index = {"zoom in": 1, "zoom out": -1, "fit": -len(ZOOMS)}[action] + ZOOMS.index(self.view_settings.zoom)
            self._set_view(zoomed(self.view_settings, self._shape(), ZOOMS[int(np.clip(index, 0, len(ZOOMS) - 1))]))
        elif action == "outline/fill":
            self._set_view(replace(self.view_settings, outline=not self.view_settings.outline))

    # -- the audit's findings

    def _on_audit_event(self, event: str):
        """The session's listener, called from the audit's thread: its progress (at most every STATUS_INTERVAL_S),
        its report (the flags column, the flag filter, the findings panel) or its failure (the red box)."""
        if event == "audit progress":
            done, total = self.session.audit_progress
            now = time.monotonic()
            if done == total or now - self._status_shown_at >= STATUS_INTERVAL_S:
                self._status_shown_at = now
                self._update_audit_status()
            return
        try:
            if event == "audit failed":
                self._show_error("the background audit failed", self.session.audit_error)
            else:
                self._update_flag_choices()
                self._refresh()
            self._update_audit_status()
        except Exception:  # shown: an exception in the audit's thread would reach no one
            self._show_error("showing the audit's result failed", traceback.format_exc())
            if self.raise_errors:
                raise

    def wait_for_audit(self, timeout: float | None = None) -> dict | None:
        """The report, after waiting (at most `timeout` s) for a background audit (the notebook's report cell,
        tests and scripts)."""
        return self.session.wait_for_audit(timeout)

    def summary(self) -> str:
        """One paragraph stating where the review stands (the notebook's conclusion)."""
        return self.session.summary()
