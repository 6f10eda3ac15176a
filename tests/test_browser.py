"""The review notebook in a real JupyterLab, driven by headless Chromium: Run All, then review by keyboard.

After a click on the picture, keys (j/k/arrows, a, p, u, zoom) go to the review wherever the pointer is, and no
key reaches JupyterLab (no cell inserted, deleted or changed, the notebook's mode unchanged); after a click
elsewhere, or Escape, they no longer go to the review. Also: the jump box, the verdicts durable in the log, the
audit's flags arriving from the background thread, the picture's aspect ratio at two widths. The helpers here
(a Lab server over a temp folder, a kernel started before the page opens, a Run All that survives Lab's
dialogs) are also used by bench/bench_review.py.
"""
import ast
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import nbformat
import pytest

PROJECT_DIR = Path(__file__).resolve().parents[1]
NOTEBOOK = "02_verify_alignment.ipynb"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


# ---------------------------------------------------------------- driving JupyterLab (shared with the bench)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def review_notebook_root(root: Path, parameters: dict) -> Path:
    """A folder with notebooks/02 whose parameters cell holds its own literals updated with `parameters`;
    returns root."""
    (root / "notebooks").mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(PROJECT_DIR / "notebooks" / NOTEBOOK, 4)
    cell = next(cell for cell in nb.cells if "parameters" in cell.metadata.get("tags", []))
    values = {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(cell.source).body}  # literals
    cell.source = "\n".join(f"{key} = {value!r}" for key, value in {**values, **parameters}.items())
    nbformat.write(nb, root / "notebooks" / NOTEBOOK)
    return root


class Lab:
    """A JupyterLab server on a free loopback port over `root` (the project itself is installed, editable)."""

    def __init__(self, root: Path, log_path: Path):
        self.root, self.port, self.token = Path(root), free_port(), secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.server = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
             f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
             "--ServerApp.open_browser=False"] + (["--allow-root"] if os.geteuid() == 0 else []),
            stdout=subprocess.DEVNULL, stderr=open(log_path, "wb"), env={**os.environ, "JUPYTER_NO_CONFIG": "1"},
        )
        deadline = time.monotonic() + 90
        while True:
            try:
                self.api("GET", "status")
                return
            except OSError:
                assert self.server.poll() is None and time.monotonic() < deadline, log_path.read_text()[-2000:]
                time.sleep(0.5)

    def api(self, method: str, path: str, body=None):
        """Call the server's REST API; the decoded JSON answer."""
        request = urllib.request.Request(f"{self.base}/api/{path}", method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"token {self.token}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            text = answer.read()
        return json.loads(text) if text else None

    def start_kernel(self, notebook_path: str) -> str:
        """Start a python3 kernel in a session for the notebook; its id. Lab then opens the notebook on it and
        never asks which kernel to start (that dialog swallowed a Run All about 2 runs in 5 on a busy machine)."""
        session = self.api("POST", "sessions", {"path": notebook_path, "type": "notebook", "name": notebook_path,
                                                "kernel": {"name": "python3"}})
        return session["kernel"]["id"]

    def wait_kernel_idle(self, kernel_id: str, timeout: float = 120):
        """Until the server has seen the kernel idle (it says "starting" until a client has talked to it)."""
        deadline = time.monotonic() + timeout
        while self.api("GET", f"kernels/{kernel_id}")["execution_state"] != "idle":
            assert time.monotonic() < deadline, f"kernel {kernel_id} not idle after {timeout} s"
            time.sleep(0.3)

    def kernel_pid(self) -> int | None:
        """Process id of the (one) kernel this server started."""
        import psutil

        for child in psutil.Process(self.server.pid).children(recursive=True):
            if "ipykernel" in " ".join(child.cmdline()):
                return child.pid
        return None

    def url(self, notebook_path: str) -> str:
        return f"{self.base}/lab/tree/{notebook_path}?token={self.token}"

    def stop(self):
        self.server.terminate()
        try:
            self.server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.server.kill()


@contextmanager
def chromium_page(width: int = 1500, height: int = 1000):
    """A headless Chromium page (the system's /usr/bin/chromium)."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.is_file(), f"{CHROMIUM} missing: apt-get install -y chromium chromium-driver"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def open_and_run_all(page, lab: Lab, notebook_path: str, ui_selector: str = ".review-image img",
                     timeout_s: float = 120, attempts: int = 2) -> float:
    """Open the notebook on an idle kernel, Run All Cells, wait for `ui_selector` to be visible (once more if it
    does not appear: a run Lab swallowed); returns seconds from the Run All click to the UI being visible."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    kernel = lab.start_kernel(notebook_path)
    page.goto(lab.url(notebook_path))
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120_000)
    dialogs = accept_dialogs(page)
    lab.wait_kernel_idle(kernel)
    page.locator(".jp-StatusBar-TextItem", has_text="| Idle").first.wait_for(timeout=120_000)
    for attempt in range(attempts):
        dialogs += accept_dialogs(page)
        click_past_dialogs(page, page.get_by_role("menuitem", name="Run", exact=True), dialogs)
        started = time.monotonic()
        click_past_dialogs(page, page.get_by_text("Run All Cells", exact=True), dialogs)
        try:
            page.locator(ui_selector).first.wait_for(state="visible", timeout=timeout_s * 1000)
            page.wait_for_function(f"() => document.querySelector('{ui_selector}').naturalWidth > 0",
                                   timeout=timeout_s * 1000)
            return time.monotonic() - started
        except PlaywrightTimeout:  # try once more after clearing any dialog
            dialogs += accept_dialogs(page)
    outputs = [" ".join(text.split())[:300] for text in page.locator(".jp-OutputArea-output").all_inner_texts()]
    raise AssertionError(f"the review UI never appeared after {attempts} Run All; dialogs seen: {dialogs}; "
                         f"status: {page.locator('.jp-StatusBar-TextItem').all_inner_texts()}; outputs: {outputs}")


def click_past_dialogs(page, target, seen: list, attempts: int = 6):
    """Click `target`; a JupyterLab dialog in the way is accepted first and its text kept in `seen`."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _ in range(attempts):
        seen += accept_dialogs(page)
        try:
            target.click(timeout=10_000)
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError(f"could not click {target}; dialogs seen: {seen}")


def accept_dialogs(page) -> list[str]:
    """Press the default button (else Escape) of every open JupyterLab dialog; their texts, for failure messages."""
    texts = []
    dialogs = page.locator(".jp-Dialog")
    while (open_now := dialogs.count()) and len(texts) < 5:
        dialog = dialogs.last  # the newest is on top
        texts.append(" ".join(dialog.inner_text().split()))
        accept = dialog.locator(".jp-Dialog-button.jp-mod-accept")
        if accept.count():
            accept.first.click(timeout=5_000)
        else:
            page.keyboard.press("Escape")
        deadline = time.monotonic() + 30
        while dialogs.count() >= open_now and time.monotonic() < deadline:
            page.wait_for_timeout(200)
    if texts:
        print("accepted JupyterLab dialogs:", sorted(set(texts)))
    return texts


def output_tracebacks(page) -> list[str]:
    """Tracebacks in any output area, and the review's red error box."""
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    found = [text for text in errors.all_inner_texts() if "Traceback" in text or "Error" in text]
    return found + [text for text in page.locator(".review-error").all_inner_texts() if text.strip()]


# ---------------------------------------------------------------- the test


@pytest.fixture
def lab(tmp_path, example_data):
    """(Lab, log path) over a temp folder whose review notebook points at the example data."""
    log_path = tmp_path / "verdicts.jsonl"
    root = review_notebook_root(tmp_path / "lab", {
        "data_dir": str(example_data), "output_dir": str(tmp_path / "out"), "seed": 0,
        "review_log": str(log_path), "reviewer": "browser-test", "label_issues": ""})
    server = Lab(root, tmp_path / "lab.log")
    yield server, log_path
    server.stop()


def title(page) -> str:
    return page.locator(".review-title").inner_text()


def wait_title(page, name: str):
    """Until the review shows example `name`."""
    page.wait_for_function(
        "name => document.querySelector('.review-title').innerText.includes('example ' + name + ' ')",
        arg=name, timeout=20_000)


def wait_log(path: Path, predicate, timeout: float = 20) -> dict:
    """The log's latest line per name, once `predicate(it)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        latest = {}
        if path.exists():
            for line in path.read_text().splitlines():
                entry = json.loads(line)
                latest[entry["name"]] = entry
        if predicate(latest) or time.monotonic() > deadline:
            return latest
        time.sleep(0.2)


def notebook_state(page) -> tuple[int, int, str]:
    """(number of cells, of markdown cells, the notebook's mode) as JupyterLab shows them."""
    cells = page.locator(".jp-Notebook .jp-Cell").count()
    markdown = page.locator(".jp-Notebook .jp-MarkdownCell").count()
    mode = page.locator(".jp-Notebook").first.evaluate(
        "n => n.classList.contains('jp-mod-editMode') ? 'edit' : n.classList.contains('jp-mod-commandMode') ? "
        "'command' : 'none'")
    return cells, markdown, mode


def review_has_keys(page) -> bool:
    """Whether the picture has the focus (keys go to the review) and shows it by its outline."""
    return page.evaluate("""() => {
        const box = document.querySelector('.review-image');
        const outlined = getComputedStyle(box).outlineStyle !== 'none';
        if ((document.activeElement === box) !== outlined) throw new Error('outline does not follow the focus');
        return outlined;
    }""")


def aspect_error(page) -> float:
    """Relative difference between the strip's shown and natural aspect ratios."""
    return page.locator(".review-image img").evaluate(
        "img => Math.abs((img.clientWidth / img.clientHeight) / (img.naturalWidth / img.naturalHeight) - 1)")


def test_review_notebook_by_keyboard_in_chromium(lab, tmp_path):
    server, log_path = lab
    with chromium_page() as page:
        open_and_run_all(page, server, f"notebooks/{NOTEBOOK}")
        image = page.locator(".review-image")
        image.scroll_into_view_if_needed()
        assert "example 0 " in title(page)  # a fresh log: the first unreviewed is the first example
        assert not review_has_keys(page)
        image.click()
        assert review_has_keys(page)
        state = notebook_state(page)

        page.locator(".review-info").hover()  # the pointer leaves the picture: the keys still go to the review
        for key, name in (("j", "1"), ("ArrowRight", "2"), ("k", "1"), ("ArrowLeft", "0")):
            page.keyboard.press(key)
            wait_title(page, name)
        page.mouse.move(5, 5)  # off the notebook altogether
        page.keyboard.press("a")  # aligned: written, then the next unreviewed example (1)
        wait_title(page, "1")
        page.keyboard.press("p")
        wait_title(page, "2")
        latest = wait_log(log_path, lambda latest: "1" in latest)
        assert latest["0"]["verdict"] == "aligned" and latest["1"]["verdict"] == "problem"
        assert latest["1"]["reviewer"] == "browser-test"
        page.keyboard.press("u")  # undo the problem verdict of 1: shown again, unreviewed
        wait_title(page, "1")
        latest = wait_log(log_path, lambda latest: latest.get("1", {}).get("undo"))
        assert latest["1"]["verdict"] == "unreviewed"
        page.locator(".review-progress").get_by_text("reviewed 1 / 20").wait_for(timeout=10_000)
        page.keyboard.press("+")
        page.locator(".review-panel-titles").get_by_text("image · 2x").wait_for(timeout=10_000)
        page.keyboard.press("0")
        page.locator(".review-panel-titles").get_by_text("image · 2x").wait_for(state="detached", timeout=10_000)
        for stray in ("b", "m", "x", "d", "d", "Enter", "Shift+Enter"):  # command-mode shortcuts: none may act
            page.keyboard.press(stray)
        page.wait_for_timeout(1_000)
        assert "example 1 " in title(page) and review_has_keys(page)
        assert notebook_state(page) == state, "a key reached JupyterLab"
        assert page.locator(".jp-Dialog").count() == 0

        page.locator(".jp-MarkdownCell").first.click()  # a click elsewhere: the keys are the notebook's again
        assert not review_has_keys(page)
        page.keyboard.press("j")
        page.wait_for_timeout(1_500)
        assert "example 1 " in title(page), "a key went to the review after a click elsewhere"

        jump = page.locator(".review-jump input")
        jump.fill("17")
        jump.press("Enter")
        wait_title(page, "17")
        image.scroll_into_view_if_needed()
        image.click()
        page.keyboard.press("a")
        wait_title(page, "18")  # the next unreviewed one after 17
        assert wait_log(log_path, lambda latest: "17" in latest)["17"]["verdict"] == "aligned"
        page.keyboard.press("Escape")  # the other way to hand the keys back
        assert not review_has_keys(page)

        # the audit ran in the kernel's background thread; its flags reach the browser without any action
        page.locator(".review-audit").get_by_text("flagged").wait_for(timeout=120_000)
        assert "flags:" in page.locator(".review-info").inner_text()
        # under the live review, the picture of what needs a look, drawn at once (the audit was running then)
        look = page.locator(".jp-RenderedImage img").last
        look.wait_for(timeout=120_000)
        assert look.evaluate("img => img.naturalWidth") > 0
        assert page.get_by_text("pair(s) need a look").count() == 1

        assert aspect_error(page) < 0.02
        page.set_viewport_size({"width": 800, "height": 1000})
        page.wait_for_timeout(500)
        assert aspect_error(page) < 0.02 and image.evaluate("box => box.clientWidth") < 800

        assert notebook_state(page)[:2] == state[:2]
        tracebacks = output_tracebacks(page)
        page.set_viewport_size({"width": 1500, "height": 1000})
        image.scroll_into_view_if_needed()
        page.screenshot(path=str(tmp_path / "review.png"))
        shutil.copy(tmp_path / "review.png", _screenshot_copy())
    assert not tracebacks, tracebacks
    final = wait_log(log_path, lambda latest: True)
    assert {name: entry["verdict"] for name, entry in final.items()} == {"0": "aligned", "1": "unreviewed",
                                                                        "17": "aligned"}


def _screenshot_copy() -> Path:
    folder = PROJECT_DIR / "outputs" / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "review_notebook.png"
