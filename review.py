"""Review image/mask alignment by eye (ipywidgets) and keep each verdict in a durable, append-only log.

`ReviewLog(path)` is the verdict log; `ReviewApp(data_dir, report, log_path).widget` is the UI of notebook 02.
"""
from __future__ import annotations

import io
import traceback

import numpy as np

import audit
import figures
import loader
from verdicts import VERDICTS, ReviewLog  # noqa: F401  (review.ReviewLog is the public name)

FILTERS = ("all", "flagged", "unreviewed")
# the same colours as every other figure of the project, as 8-bit RGB
CLASS_COLOURS = tuple(tuple(int(round(255 * v)) for v in colour) for colour in figures.CLASS_COLOURS)


# ---------------------------------------------------------------- plain logic behind the widgets


def progress_text(names, verdicts) -> str:
    """'reviewed 12 / 20' counting only names of this dataset."""
    return f"reviewed {sum(name in verdicts for name in names)} / {len(names)}"


def filter_names(names, report, verdicts, mode: str) -> list[str]:
    """The names to step through: all, only flagged (by the audit) or only unreviewed (no verdict yet)."""
    if mode not in FILTERS:
        raise ValueError(f"filter must be one of {FILTERS}, got {mode!r}")
    if mode == "flagged":
        marked = set(audit.flagged(report))
        return [name for name in names if name in marked]
    if mode == "unreviewed":
        return [name for name in names if name not in verdicts]
    return list(names)


def render_views(image, mask, opacity=0.4, classes=(1, 2), mode="fill") -> np.ndarray:
    """One RGB uint8 strip: image | overlay | mask, each the size of the image (drawn by figures.overlay_rgb)."""
    if mode not in ("fill", "contour"):
        raise ValueError(f"mode must be 'fill' or 'contour', got {mode!r}")
    gray = loader.image_to_float(image)
    contour = mode == "contour"
    views = [np.repeat(gray[..., None], 3, axis=2),
             figures.overlay_rgb(gray, mask, opacity, classes, contour),
             figures.overlay_rgb(np.zeros_like(gray), mask, 1.0, classes, contour)]  # the labels alone
    return np.round(np.concatenate(views, axis=1) * 255).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode an RGB uint8 array as PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def describe(entry: dict | None, verdict: dict | None) -> str:
    """HTML listing the audit's flags and main measures for one example, and its verdict so far."""
    if entry is None:
        return "<i>not in the audit report</i>"
    flags = ", ".join(entry["flags"]) or "none"
    rows = [f"<b>flags:</b> {flags}"]
    rows += [f"{label}: {c['components']} component(s), {c['pixels']} px" for label, c in entry["classes"].items()]
    if entry.get("order"):
        rows.append(f"column (top to bottom): {entry['order']['sequence'] or '-'}")
    if entry.get("alignment"):
        a = entry["alignment"]
        rows.append(f"edge fit {a['score']:.3f}; best alternative {a['best_alternative']} {a['alternative_score']:.3f}"
                    f" (margin {a['margin']})")
    rows.append(f"<b>verdict:</b> {verdict['verdict']} {_escape(verdict['note'])}" if verdict else "<b>verdict:</b> -")
    return "<br>".join(rows)


def _escape(text: str) -> str:
    import html

    return html.escape(text)


# ---------------------------------------------------------------- the widget


class ReviewApp:
    """The review UI: browse examples, see image | overlay | mask and the audit's findings, record verdicts.

    Callback errors are shown in a red box above the UI and kept in `errors`; `raise_errors=True`
    (tests) re-raises them instead, so nothing disappears into a widget's output area.
    """

    def __init__(self, data_dir, report, log_path, raise_errors: bool = False):
        import ipywidgets as w

        self.data = loader.DataLoader(data_dir, batch_size=1, labels=report["labels"], progress=False)
        self.report = report
        self.entries = {entry["name"]: entry for entry in report["examples"]}
        self.log = ReviewLog(log_path)
        self.verdicts = self.log.verdicts()
        self.raise_errors = raise_errors
        self.errors: list[str] = []
        self.names = filter_names(self.data.names, report, self.verdicts, "all")
        self.current = self.names[0]

        self.error_box = w.HTML("")
        self.title = w.HTML().add_class("review-title")
        self.slider = w.IntSlider(0, 0, len(self.names) - 1, description="example").add_class("review-slider")
        self.prev_button, self.next_button = w.Button(description="previous"), w.Button(description="next")
        self.filter = w.ToggleButtons(options=FILTERS, value="all", description="show")
        self.opacity = w.FloatSlider(0.4, min=0, max=1, step=0.05, description="opacity")
        self.mode = w.ToggleButtons(options=("fill", "contour"), value="fill", description="mode")
        labels = report["labels"]
        self.class_boxes = {v: w.Checkbox(True, description=labels[v], indent=False) for v in range(1, len(labels))}
        self.view = w.Image(format="png")
        self.info = w.HTML().add_class("review-info")
        self.note = w.Textarea(placeholder="note (optional)", layout=w.Layout(width="300px"))
        self.verdict_buttons = {v: w.Button(description=v, button_style="success" if v == "aligned" else "danger")
                                .add_class(f"verdict-{v}") for v in VERDICTS}
        self.progress = w.Label().add_class("review-progress")

        self.slider.observe(self._guard(lambda change: self.show_index(change["new"])), names="value")
        self.prev_button.on_click(self._guard(lambda _: self.step(-1)))
        self.next_button.on_click(self._guard(lambda _: self.step(1)))
        self.filter.observe(self._guard(lambda change: self.apply_filter(change["new"])), names="value")
        for control in (self.opacity, self.mode, *self.class_boxes.values()):
            control.observe(self._guard(lambda _: self.refresh()), names="value")
        for verdict, button in self.verdict_buttons.items():
            button.on_click(self._guard(lambda _, v=verdict: self.record(v)))
        self.widget = w.VBox([
            self.error_box, self.title,
            w.HBox([self.prev_button, self.slider, self.next_button, self.filter]),
            w.HBox([self.opacity, self.mode, *self.class_boxes.values()]),
            w.HBox([self.view, self.info]),
            w.HBox([*self.verdict_buttons.values(), self.note, self.progress]),
        ])
        self.refresh()

    def _guard(self, callback):
        """Wrap a callback so an exception is shown prominently and kept (or re-raised in tests)."""

        def guarded(*args):
            try:
                callback(*args)
            except Exception:
                text = traceback.format_exc()
                self.errors.append(text)
                self.error_box.value = (f"<pre style='color:white;background:#b00020;padding:6px'>"
                                        f"review callback failed:\n{_escape(text)}</pre>")
                if self.raise_errors:
                    raise

        return guarded

    # -- actions (plain methods: tests call them directly)

    def show_index(self, index: int):
        """Show the example at position `index` of the current list."""
        self.current = self.names[index]
        self.refresh()

    def step(self, delta: int):
        """Move by delta within the current list (clamped at its ends)."""
        self.slider.value = int(np.clip(self.names.index(self.current) + delta, 0, len(self.names) - 1))

    def apply_filter(self, mode: str):
        """Step through all, only flagged or only unreviewed examples from now on."""
        names = filter_names(self.data.names, self.report, self.verdicts, mode)
        if not names:
            self.error_box.value = f"<b>no {mode} examples</b>; showing all"
            names = list(self.data.names)
        else:
            self.error_box.value = ""
        self.names = names
        self.current = self.current if self.current in names else names[0]
        with self.slider.hold_trait_notifications():
            self.slider.max = len(names) - 1
            self.slider.value = names.index(self.current)
        self.refresh()

    def record(self, verdict: str):
        """Write the verdict for the current example (with the note) to the log and show it."""
        self.log.record(self.current, verdict, self.note.value)
        self.verdicts = self.log.verdicts()
        self.note.value = ""
        self.refresh()

    def refresh(self):
        """Redraw the views, the findings, the title and the progress for the current example."""
        image, mask = self.data.raw_pair(self.current)
        classes = [value for value, box in self.class_boxes.items() if box.value]
        self.view.value = png_bytes(render_views(image, mask, self.opacity.value, classes, self.mode.value))
        self.info.value = describe(self.entries.get(self.current), self.verdicts.get(self.current))
        position = self.names.index(self.current) + 1
        self.title.value = f"<h3>example {self.current} ({position} / {len(self.names)} {self.filter.value})</h3>"
        self.progress.value = progress_text(self.data.names, self.verdicts)
