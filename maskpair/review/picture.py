"""The review's picture: a PNG strip in a focusable box whose keys and mouse gestures go to the kernel (anywidget).

A click on the picture gives it the keyboard until the focus goes elsewhere (a click outside, Tab, Escape),
wherever the pointer is meanwhile; a blue outline shows while it has it. JupyterLab 4 listens for keys on
`document` in the bubbling phase (`bubblingKeydown`), so a key stopped at the box never reaches it: no
command-mode shortcut (`a`, `b`, `dd`, `m`, ...) can edit the notebook while the review has the keyboard.
"""
from __future__ import annotations

import anywidget
import traitlets

ESM = """
const WHEEL_INTERVAL_MS = 120;  // a wheel turn fires many events: at most one zoom step this often

function render({ model, el }) {
  const box = document.createElement("div");
  box.className = "review-image";
  box.tabIndex = 0;
  const img = document.createElement("img");
  img.draggable = false;
  box.appendChild(img);
  el.appendChild(box);

  let url = null;
  function showPicture() {
    const png = model.get("value");
    if (!png || !png.byteLength) return;
    const previous = url;
    url = URL.createObjectURL(new Blob([png], { type: "image/png" }));
    img.src = url;
    if (previous) URL.revokeObjectURL(previous);  // the shown picture stays until the new one is decoded
  }

  function point(event) {  // the pointer in the strip's own pixels, at any displayed size
    const rect = img.getBoundingClientRect();
    return { dataX: (event.clientX - rect.left) * img.naturalWidth / rect.width,
             dataY: (event.clientY - rect.top) * img.naturalHeight / rect.height };
  }

  function onKeydown(event) {
    if (event.key === "Tab" || event.ctrlKey || event.metaKey) return;  // focus moves on; Ctrl+S etc. stay Lab's
    if (event.key === "Escape") { box.blur(); return; }
    event.stopPropagation();  // JupyterLab's listener on document never sees it: a stray key edits nothing
    if (event.altKey || !model.get("sent_keys").includes(event.key)) return;
    event.preventDefault();   // e.g. arrows would scroll the notebook
    model.send({ type: "keydown", key: event.key });
  }

  function onMousedown(event) {
    if (event.button !== 0) return;
    event.preventDefault();  // no native image drag or text selection, so focus is given by hand
    box.focus({ preventScroll: true });
    model.send({ type: "mousedown", ...point(event) });
    // a drag may end outside the picture; the kernel still needs its end
    window.addEventListener("mouseup", (up) => model.send({ type: "mouseup", ...point(up) }), { once: true });
  }

  function onDblclick(event) {
    event.preventDefault();
    event.stopPropagation();  // the notebook toggles an output image's size on a double click
    model.send({ type: "dblclick", ...point(event) });
  }

  let lastWheel = -Infinity;
  function onWheel(event) {
    event.preventDefault();  // the wheel zooms the picture instead of scrolling the notebook
    if (event.timeStamp - lastWheel < WHEEL_INTERVAL_MS) return;
    lastWheel = event.timeStamp;
    model.send({ type: "wheel", deltaY: event.deltaY, ...point(event) });
  }

  box.addEventListener("keydown", onKeydown);
  box.addEventListener("mousedown", onMousedown);
  box.addEventListener("dblclick", onDblclick);
  box.addEventListener("wheel", onWheel, { passive: false });
  model.on("change:value", showPicture);
  showPicture();
  return () => { if (url) URL.revokeObjectURL(url); };
}

export default { render };
"""

CSS = """
.review-image { cursor: crosshair; outline: none; }
.review-image:focus { outline: 2px solid #1976d2; }
.review-image img { display: block; width: 100%; height: auto; image-rendering: pixelated; }
"""


class ReviewImage(anywidget.AnyWidget):
    """A PNG strip (`value`, bytes) that reports the browser's events on it to `on_event` callbacks: the keys in
    `sent_keys` while it has the focus (other keys are kept from JupyterLab and dropped), wheel, drag and
    double-click with the pointer's position in the strip's pixels."""

    _esm = ESM
    _css = CSS
    value = traitlets.Bytes(b"").tag(sync=True)               # the PNG shown (sent as a binary buffer)
    sent_keys = traitlets.List(traitlets.Unicode()).tag(sync=True)  # KeyboardEvent.key values sent on

    def on_event(self, callback):
        """Call `callback(event)` for each event from the browser: {"type": "keydown", "key": ...} or
        {"type": "mousedown" | "mouseup" | "dblclick" | "wheel", "dataX": ..., "dataY": ...[, "deltaY": ...]}."""

        def receive(_widget, content, _buffers):
            if isinstance(content, dict) and "type" in content:  # anywidget's own command messages pass by
                callback(content)

        self.on_msg(receive)
