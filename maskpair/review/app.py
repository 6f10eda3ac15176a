"""The review UI of notebook 02 (ipywidgets + the `picture.ReviewImage` anywidget): one example at a time as
image | overlay | labels (and the label-issues picture when given), zoomable; after a click on the picture, keys
judge and move (KEYS) until the focus goes elsewhere. Each verdict goes to a `ReviewLog`.

It scales to thousands of pairs: names come from the file listing, pairs are read one at a time (a few
neighbours cached, the next one pre-rendered), and the audit's flags come from a current report or from an
audit running in a background thread, so the UI appears at once and fills the flags in when they arrive.
"""
from __future__ import annotations

import html
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from maskpair import audit
from maskpair.data.loader import DataLoader
from maskpair.errors import DataError
from maskpair.review.background import background_audit, current_audit_report
from maskpair.review.listing import (
    SORT_KEYS,
    VERDICT_FILTERS,
    default_log_path,
    describe,
    find_name,
    flag_codes,
    progress_text,
    read_label_issues,
    select_names,
    sort_names,
    table_header,
    table_row,
)
from maskpair.review.log import UNREVIEWED, VERDICTS, ReviewLog, default_reviewer
from maskpair.review.render import (
    DECODED_CACHE,
    LRU,
    RENDERED_CACHE,
    ZOOMS,
    View,
    class_rgb,
    display_rgb,
    image_point,
    panned,
    placeholder_strip,
    png_bytes,
    render_strip,
    zoomed,
)

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
    optional label_issues.json (a rank column, sorting/filtering by it, its picture as a fourth panel).
    Callback errors are shown in a red box above the UI (cleared by the next action that succeeds) and kept
    in `errors`; `raise_errors=True` (tests) re-raises them instead.
    """

    def __init__(self, data_dir, report: dict | None = None, log_path=None, *, reviewer: str | None = None,
                 label_issues=None, audit_paths=(), run_audit: bool = True, raise_errors: bool = False):
        self.data_dir = Path(data_dir)
        self.data = DataLoader(self.data_dir, batch_size=1, cache=False, progress=False)
        self.names = list(self.data.names)
        self.natural = {name: i for i, name in enumerate(self.names)}
        self.log = ReviewLog(log_path if log_path else default_log_path(self.data_dir))
        self.reviewer = reviewer or default_reviewer()
        self.verdicts = self.log.latest()  # name -> its latest line; kept in step with every record/undo
        self.issues = read_label_issues(label_issues) if label_issues else {}
        self.ranks = {name: entry["rank"] for name, entry in self.issues.items() if entry.get("rank") is not None}
        self.raise_errors = raise_errors
        self.errors: list[str] = []
        self.audit_paths = [Path(path) for path in audit_paths]
        self.report, self.entries, self.flags = None, {}, None
        self.audit_source = "none"
        self.view_settings = View(classes=tuple(range(1, len(self.data.labels))))
        self._lock = threading.RLock()  # callbacks (kernel thread) and the background audit's result
        self._syncing = False  # set while the app itself moves widgets, so their observers stay quiet
        self._decoded = LRU(*DECODED_CACHE, sizeof=lambda pair: sum(a.nbytes for a in pair if a is not None))
        self._rendered = LRU(*RENDERED_CACHE, sizeof=len)
        self._prefetcher = ThreadPoolExecutor(1, thread_name_prefix="review-prefetch")
        self._wanted: set = set()
        self._drag_start = None
        self._audit = None  # the BackgroundAudit this app waits for, if any
        self._audit_applied = threading.Event()  # set once its report (or failure) has been taken in
        self._audit_shown_at = 0.0
        self._started = False  # True once the first example is shown
        self._build_widgets()
        self.order = sort_names(self.names, self.sort_by.value, None, self.verdicts, self.ranks, natural=self.natural)
        self.position = {name: i for i, name in enumerate(self.order)}
        self.current = next((name for name in self.order if name not in self.verdicts), self.order[0])

        if report is None:
            report, found_at = current_audit_report(self.audit_paths, self.data_dir)
            if report is not None:
                self.audit_source = f"reused {found_at}"
        else:
            self.audit_source = "given"
        if report is not None:
            self.use_report(report)
        elif run_audit:
            self.start_audit()
        else:
            self.audit_status.value = "audit: none (no flags)"
        with self._lock:
            self.show(self.current)
            self._update_progress()
            self._started = True

    # -- building the widgets

    def _build_widgets(self):
        """Create every widget and wire it to the actions (each wrapped by _guard)."""
        import ipywidgets as w

        from maskpair.review.picture import ReviewImage

        labels = self.data.labels
        self.error_box = w.HTML("").add_class("review-error")
        self.notice = w.HTML("").add_class("review-notice")
        self.title = w.HTML().add_class("review-title")
        self.progress = w.HTML(layout=w.Layout(margin="0 24px 0 4px")).add_class("review-progress")
        self.audit_status = w.HTML().add_class("review-audit")
        self.prev_button = w.Button(description="◀ previous", layout=w.Layout(width="100px"))
        self.next_button = w.Button(description="next ▶", layout=w.Layout(width="100px"))
        self.slider = w.IntSlider(0, 0, max(0, len(self.names) - 1), readout=False, description="example",
                                  continuous_update=False, layout=w.Layout(width="340px")).add_class("review-slider")
        self.position_label = w.HTML(layout=w.Layout(margin="0 8px")).add_class("review-position")
        self.jump = w.Text(placeholder="jump to a name ⏎", continuous_update=False,
                           layout=w.Layout(width="180px")).add_class("review-jump")
        self.auto_advance = w.Checkbox(True, description="after a verdict, show the next unreviewed", indent=False,
                                       layout=w.Layout(width="300px"))
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
        self.verdict_filter = w.Dropdown(options=VERDICT_FILTERS, value="any", description="verdict",
                                         layout=w.Layout(width="200px"))
        self.rank_filter = w.BoundedIntText(0, min=0, max=max(1, len(self.names)), description="rank ≤",
                                            layout=w.Layout(width="150px", display="" if self.ranks else "none"))
        # with a label-issue ranking the most suspect come first: the review starts at the top of the ranking
        self.sort_by = w.Dropdown(options=[key for key in SORT_KEYS if key != "rank" or self.ranks],
                                  value="rank" if self.ranks else "name", description="sort by",
                                  layout=w.Layout(width="200px"))
        self.descending = w.Checkbox(False, description="descending", indent=False, layout=w.Layout(width="110px"))
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
            with self._lock:
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

    def _say(self, text: str = ""):
        """A short message under the verdict buttons (not an error: e.g. an unknown name typed)."""
        self.notice.value = f"<span style='color:#8a4b00'>{html.escape(text)}</span>" if text else ""

    # -- reading and drawing the current example

    def _pair(self, name: str):
        """(image RGB uint8, mask, extra picture or None) of `name`, decoded once while it stays in the cache."""
        pair = self._decoded.get(name)
        if pair is None:
            image, mask = self.data.raw_pair(name)
            extra = self._issue_picture(name, mask.shape) if self.issues else None
            pair = (display_rgb(image), np.asarray(mask, np.uint8), extra)
            self._decoded.put(name, pair)
        return pair

    def _issue_picture(self, name: str, shape) -> np.ndarray:
        """The label-issues picture of `name` at the image's size (black when there is none)."""
        from PIL import Image

        picture = self.issues.get(name, {}).get("picture")
        if not picture or not Path(picture).is_file():
            return np.zeros((*shape[:2], 3), np.uint8)
        with Image.open(picture) as img:
            return np.asarray(img.convert("RGB").resize((shape[1], shape[0]), Image.NEAREST))

    def _shape(self) -> tuple[int, int]:
        """(H, W) of the current example."""
        return self._pair(self.current)[1].shape

    def _png(self, name: str, view: View) -> bytes:
        """The PNG strip of `name` drawn with `view`, from the cache or rendered now."""
        key = (name, view)
        png = self._rendered.get(key)
        if png is None:
            try:
                image, mask, extra = self._pair(name)
                png = png_bytes(render_strip(image, mask, view, extra))
            except DataError as err:  # a broken pair is shown as such, so the review can go on past it
                png = png_bytes(placeholder_strip(f"cannot read {name}: {err}", 4 if self.issues else 3))
            self._rendered.put(key, png)
        return png

    def _prefetch(self, names):
        """Render `names` with the current view in the background thread (the next step finds them cached)."""
        view = self.view_settings
        self._wanted = {(name, view) for name in names}
        for name in names:
            if (name, view) not in self._rendered:
                self._prefetcher.submit(self._render_if_wanted, name, view)

    def _render_if_wanted(self, name, view):
        """Prefetch task: skipped when the reviewer has moved on since it was queued."""
        if (name, view) in self._wanted and (name, view) not in self._rendered:
            try:
                self._png(name, view)
            except Exception:  # shown when the reviewer gets there and it is rendered in the foreground
                pass

    def show(self, name: str):
        """Show example `name` (kept in the list even if the filters exclude it)."""
        if name not in self.position:
            self._reorder(keep=name)
        self.current = name
        self.image.value = self._png(name, self.view_settings)  # first: the picture is what the reviewer waits for
        position = self.position[name]
        self.title.value = (f"<h3 style='margin:4px 0'>example {html.escape(name)} ({position + 1} / "
                            f"{len(self.order)} {html.escape(self._filter_text())})</h3>")
        self._syncing = True
        try:
            self.slider.max = max(0, len(self.order) - 1)
            self.slider.value = position
            self._update_table()
        finally:
            self._syncing = False
        self.position_label.value = f"<b>{html.escape(name)}</b>"
        self.info.value = describe(self.entries.get(name), self.verdicts.get(name), self.issues.get(name),
                                   audited=self.report is not None)
        self._update_panel_titles()
        ahead = [self.order[i] for i in (position + 1, position - 1) if 0 <= i < len(self.order)]
        upcoming = self.next_unreviewed()
        self._prefetch(ahead + ([upcoming] if upcoming and upcoming not in ahead else []))

    def _update_panel_titles(self):
        """Titles over the panels, with the zoom and the label-issue score when there is one."""
        view = self.view_settings
        mode = "outline" if view.outline else f"fill {view.opacity:.0%}"
        titles = ["image" + (f" · {view.zoom}x" if view.zoom > 1 else ""), f"overlay ({mode})", "labels"]
        if self.issues:
            issue = self.issues.get(self.current)
            titles.append(f"label issues (rank {issue['rank']})" if issue and "rank" in issue else "label issues")
        cells = "".join(f"<div>{html.escape(title)}</div>" for title in titles)
        value = f"<div style='display:grid;grid-template-columns:repeat({len(titles)},1fr)'>{cells}</div>"
        if self.panel_titles.value != value:
            self.panel_titles.value = value

    def _update_table(self):
        """The page of the table around the current example (only sent when it changed)."""
        position = self.position[self.current]
        start = position // TABLE_ROWS * TABLE_ROWS
        page = self.order[start:start + TABLE_ROWS]
        width = max(4, min(24, max(map(len, page), default=4)))
        with_rank = bool(self.ranks)
        options = [(table_row(name, self.flags.get(name) if self.flags is not None else None,
                              self.verdicts.get(name), self.ranks.get(name), with_rank, width), name)
                   for name in page]
        if options != list(self.table.options):
            self.table.options = options
            self.table_header.value = html.escape(table_header(with_rank, width))
        self.table.value = self.current
        self.table_position.value = (f"<small>rows {start + 1}–{start + len(page)} of {len(self.order)}; "
                                     f"click a row to show it</small>")

    def _update_progress(self):
        """Reviewed count, problems, reviewer."""
        problems = sum(1 for name in self.names if (self.verdicts.get(name) or {}).get("verdict") == "problem")
        self.progress.value = (f"{progress_text(self.names, self.verdicts)} · {problems} problem(s) · "
                               f"reviewer {html.escape(self.reviewer)}")

    def _filter_text(self) -> str:
        """The filters in words, for the title."""
        parts = [f"flags {self.flag_filter.value}" if self.flag_filter.value != "any" else "",
                 self.verdict_filter.value if self.verdict_filter.value != "any" else "",
                 f"rank ≤ {self.rank_filter.value}" if self.rank_filter.value else ""]
        text = ", ".join(part for part in parts if part) or "all"
        return text + (f", by {self.sort_by.value}" if self.sort_by.value != "name" else "")

    # -- actions (plain methods: tests call them directly)

    def step(self, delta: int):
        """Move by delta within the current list (clamped at its ends)."""
        position = int(np.clip(self.position[self.current] + delta, 0, len(self.order) - 1))
        self._say()
        self.show(self.order[position])

    def next_unreviewed(self) -> str | None:
        """The first example after the current one in the list without a verdict (wrapping), or None."""
        start = self.position.get(self.current, -1)
        for name in self.order[start + 1:] + self.order[:max(start, 0)]:
            if name not in self.verdicts:
                return name
        return None

    def record(self, verdict: str):
        """Write the verdict (with the note) for the current example durably; then the next unreviewed one."""
        name = self.current
        self.verdicts[name] = self.log.record(name, verdict, self.note.value, self.reviewer)
        self.note.value = ""
        target = self.next_unreviewed() if self.auto_advance.value else name
        self._say("" if target else "every example in this list has a verdict")
        self._reorder(keep=target or name)
        self.show(target or name)
        self._update_progress()

    def undo(self):
        """Take back the last verdict in the log and show that example again."""
        line = self.log.undo(self.reviewer)
        if line is None:
            self._say("nothing to undo")
            return
        name = line["name"]
        if line["verdict"] == UNREVIEWED:
            self.verdicts.pop(name, None)
        else:
            self.verdicts[name] = line
        self._say(f"undone: {name} is {line['verdict']} again")
        self._reorder(keep=name)
        self.show(name)
        self._update_progress()

    def jump_to(self, text: str):
        """Show the example whose name is typed (exact, else a unique match ignoring case or a unique part)."""
        if not text.strip():
            return
        name = find_name(text, self.names)
        if name is None:
            self._say(f"no single example matches {text.strip()!r}")
            return
        self._say()
        self.show(name)

    def apply_filters(self):
        """Rebuild the list from the filter and sort controls; keep the current example if it is in the new list,
        else show the first one after it (in name order)."""
        self._reorder()
        if not self.order:
            self._say("no example matches these filters; the current one stays")
            self._reorder(keep=self.current)
        elif self.current not in self.position:
            after = [name for name in self.order if self.natural[name] > self.natural[self.current]]
            self._say()
            self.show(after[0] if after else self.order[0])
            return
        else:
            self._say()
        self.show(self.current)

    def _reorder(self, keep: str | None = None):
        """self.order from the filters and the sort; `keep` stays in it even when the filters exclude it."""
        chosen = select_names(self.names, self.flags, self.verdicts, self.flag_filter.value,
                              self.verdict_filter.value, self.ranks, self.rank_filter.value)
        if keep is not None and keep not in set(chosen):
            chosen.append(keep)
        self.order = sort_names(chosen, self.sort_by.value, self.flags, self.verdicts, self.ranks,
                                self.descending.value, self.natural)
        self.position = {name: i for i, name in enumerate(self.order)}

    def _on_view_control(self, change):
        """Zoom, outline/fill, opacity or a class box changed by the reviewer."""
        if self._syncing:
            return
        view = self.view_settings
        if change["owner"] is self.zoom:
            view = zoomed(view, self._shape(), change["new"])
        self._set_view(replace(view, outline=self.outline.value, opacity=self.opacity.value,
                               classes=tuple(k for k, box in self.class_boxes.items() if box.value)))

    def _on_filter_control(self, change):
        if not self._syncing:
            self.apply_filters()

    def _on_slider(self, change):
        if not self._syncing and 0 <= change["new"] < len(self.order):
            self.show(self.order[change["new"]])

    def _on_table(self, change):
        if not self._syncing and change["new"] is not None and change["new"] != self.current:
            self.show(change["new"])

    def _set_view(self, view: View):
        """Redraw with new view settings (zoom, outline, opacity, classes), keeping the controls in step."""
        self.view_settings = view
        self._syncing = True
        try:
            self.zoom.value = view.zoom
            self.outline.value = view.outline
        finally:
            self._syncing = False
        self.show(self.current)

    def handle_event(self, event: dict):
        """One browser event from the picture (ReviewImage): keys, wheel zoom, drag to pan, double-click zoom."""
        kind = event.get("type")
        if kind == "keydown":
            self.handle_key(event.get("key", ""), event)
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

    def handle_key(self, key: str, event: dict | None = None):
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

    def export_csv(self, path=None) -> Path:
        """Write the verdicts (latest per name, in name order) to CSV, by default beside the log."""
        path = Path(path) if path else self.log.path.with_suffix(".csv")
        self.log.export_csv(path, names=self.names)
        self._say(f"wrote {path} ({sum(name in self.verdicts for name in self.names)} verdicts)")
        return path

    # -- the audit's findings

    def use_report(self, report: dict):
        """Take the audit's flags and measures: the flags column, the flag filter, the findings panel."""
        with self._lock:
            self.report = report
            self.entries = {entry["name"]: entry for entry in report["examples"]}
            self.flags = {name: entry["flags"] for name, entry in self.entries.items()}
            counts = {}
            for flags in self.flags.values():
                for code in flag_codes(flags):
                    counts[code] = counts.get(code, 0) + 1
            flagged = sum(1 for flags in self.flags.values() if flags)
            options = [("any", "any"), (f"flagged ({flagged})", "flagged"),
                       (f"not flagged ({len(self.flags) - flagged})", "not flagged")]
            options += [(f"{code} ({count})", code) for code, count in sorted(counts.items())]
            self._syncing = True
            try:
                self.flag_filter.options = options
                self.flag_filter.value = "any"
                self.flag_filter.disabled = False
            finally:
                self._syncing = False
            self.audit_status.value = f"audit ({html.escape(self.audit_source)}): {flagged} flagged"
            if self._started:
                self._reorder(keep=self.current)
                self.show(self.current)

    def start_audit(self):
        """Audit in the background (or join the audit of this data already running in this kernel, e.g. when the
        cell is run again); the flags appear when it finishes, and the UI is usable meanwhile."""
        self.audit_source = "running"
        self.audit_status.value = "audit running: starting…"
        self._audit = background_audit(self.data_dir, self.audit_paths[0] if self.audit_paths else None)
        self._audit.listeners.append(self._audit_progress)
        self._audit.future.add_done_callback(self._audit_done)

    def _audit_progress(self, done: int, total: int):
        """The status line, at most every STATUS_INTERVAL_S (called from the audit's thread)."""
        now = time.monotonic()
        if done == total or now - self._audit_shown_at >= STATUS_INTERVAL_S:
            self._audit_shown_at = now
            self.audit_status.value = f"audit running: {done:,} / {total:,} pairs"

    def _audit_done(self, future):
        """Use the finished audit's report, or show why it failed (called from the audit's thread)."""
        try:
            report = future.result()
        except Exception as err:  # anything the audit raised: shown, not lost in a thread
            with self._lock:
                self._show_error("the background audit failed", "".join(traceback.format_exception(err)))
                reason = html.escape(f"{type(err).__name__}: {err}".splitlines()[0][:200])
                self.audit_status.value = f"<span style='color:#b00020'>audit failed: {reason}</span>"
        else:
            self.audit_source = f"ran in {self._audit.seconds:.0f} s"
            self.use_report(report)
        finally:
            self._audit_applied.set()

    def wait_for_audit(self, timeout: float | None = None) -> dict | None:
        """The report, after waiting for a background audit (tests and scripts; a notebook should not block)."""
        if self._audit is not None:
            self._audit_applied.wait(timeout)
        return self.report

    def summary(self) -> str:
        """One paragraph stating where the review stands (the notebook's conclusion)."""
        reviewed = [name for name in self.names if name in self.verdicts]
        problems = [name for name in reviewed if self.verdicts[name]["verdict"] == "problem"]
        if self.report is not None:
            flagged = audit.flagged(self.report)
            listed = f": {', '.join(flagged[:20])}{' …' if len(flagged) > 20 else ''}" if flagged else ""
            audit_text = f"The audit ({self.audit_source}) flags {len(flagged)} of {len(self.names)} pairs{listed}. "
        else:
            audit_text = "The audit is still running in the background; its flags appear in the UI when it ends. "
        return (f"{len(self.names)} pairs. {audit_text}Reviewed {len(reviewed)} / {len(self.names)}, "
                f"{len(problems)} marked as a problem" + (f" ({', '.join(problems[:20])})" if problems else "")
                + f", in {self.log.path}. Training leaves the problem pairs out when given this log (notebook 04).")
