"""The review notebook in a real JupyterLab, driven by headless Chromium: slider moves, verdict is logged."""
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

PROJECT_DIR = Path(__file__).resolve().parents[1]
NOTEBOOK = "02_verify_alignment.ipynb"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lab_root(tmp_path, data_dir) -> Path:
    """A temp project: the modules, and the review notebook with its parameters pointed at temp paths."""
    root = tmp_path / "lab"
    (root / "notebooks").mkdir(parents=True)
    for module in PROJECT_DIR.glob("*.py"):
        shutil.copy(module, root)
    nb = nbformat.read(PROJECT_DIR / "notebooks" / NOTEBOOK, 4)
    params = next(cell for cell in nb.cells if "parameters" in cell.metadata.get("tags", []))
    params.source = (f'data_dir = "{data_dir}"\noutput_dir = "{tmp_path / "out"}"\nseed = 0\n'
                     f'review_log = "{tmp_path / "verdicts.jsonl"}"')
    nbformat.write(nb, root / "notebooks" / NOTEBOOK)
    return root


@pytest.fixture
def lab(tmp_path, example_data):
    """(base URL with token, log path): JupyterLab on a free loopback port over a temp project."""
    port, token = free_port(), secrets.token_hex(16)
    root = lab_root(tmp_path, example_data)
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False"]
        + (["--allow-root"] if os.geteuid() == 0 else []),  # CI containers often run as root
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "lab.log", "wb"), env={**os.environ, "JUPYTER_NO_CONFIG": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "lab.log").read_text()[-2000:]
            time.sleep(0.5)
    yield f"{base}/lab/tree/notebooks/{NOTEBOOK}?token={token}", tmp_path / "verdicts.jsonl"
    server.terminate()
    server.wait(timeout=20)


def test_review_notebook_in_chromium(lab, tmp_path):
    assert CHROMIUM.is_file(), f"{CHROMIUM} missing: apt-get install -y chromium chromium-driver"
    url, log_path = lab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.goto(url)
        page.locator(".jp-Notebook").wait_for(timeout=60_000)
        title = page.locator(".review-title")
        run_all_until_visible(page, title, tmp_path)
        title.scroll_into_view_if_needed()
        before = title.inner_text()
        assert "example 0 " in before

        page.locator(".review-slider .noUi-handle").focus()
        for _ in range(3):
            page.keyboard.press("ArrowRight")
        # three steps right from example 0 (names 0..19 in natural order): the kernel must show example 3
        page.wait_for_function("() => document.querySelector('.review-title').innerText.includes('example 3 ')",
                               timeout=20_000)
        name = title.inner_text().split()[1]
        assert name == "3" and title.inner_text() != before

        page.locator(".verdict-aligned").click()
        deadline = time.monotonic() + 20
        while not (log_path.exists() and name in _verdicts(log_path)) and time.monotonic() < deadline:
            time.sleep(0.3)
        page.locator(".review-progress").get_by_text("reviewed 1 / 20").wait_for(timeout=10_000)
        shot = tmp_path / "review.png"
        page.screenshot(path=str(shot), full_page=False)
        shutil.copy(shot, _screenshot_copy())
        errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        tracebacks = [text for text in errors.all_inner_texts() if "Traceback" in text or "Error" in text]
        browser.close()
    assert _verdicts(log_path)[name]["verdict"] == "aligned"
    assert not tracebacks, tracebacks


def run_all_until_visible(page, title, tmp_path, attempts: int = 3):
    """Run All Cells, again if the UI has not appeared (a run sent before the kernel was up is lost)."""
    page.get_by_text("Kernel status: Idle").first.wait_for(state="attached", timeout=60_000)  # kernel is up
    dialogs = []
    for attempt in range(attempts):
        click_past_dialogs(page, page.get_by_role("menuitem", name="Run", exact=True), dialogs)
        click_past_dialogs(page, page.get_by_text("Run All Cells", exact=True), dialogs)
        try:
            title.wait_for(timeout=45_000)
            return
        except PlaywrightTimeout:
            page.screenshot(path=str(tmp_path / f"no_ui_{attempt}.png"))
            dialogs += accept_dialogs(page)
    raise AssertionError(f"the review UI never appeared; dialogs seen: {dialogs}; screenshots in {tmp_path}")


def click_past_dialogs(page, target, seen: list, attempts: int = 6):
    """Click `target`; a JupyterLab dialog that pops up first is accepted and its text kept in `seen`, so a
    failure says what was in the way. On a busy machine Lab can open the notebook before it has the kernel list
    and then asks which kernel to start, at any moment after the page loads (this failed CI once)."""
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
        deadline = time.monotonic() + 30  # a loaded machine may take a while to start the chosen kernel
        while dialogs.count() >= open_now and time.monotonic() < deadline:
            page.wait_for_timeout(200)
    if texts:
        print("accepted JupyterLab dialogs:", sorted(set(texts)))  # shown in the pytest report on failure
    return texts


def _verdicts(path):
    return {entry["name"]: entry for entry in map(json.loads, path.read_text().splitlines())}


def _screenshot_copy() -> Path:
    folder = PROJECT_DIR / "outputs" / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "review_notebook.png"
