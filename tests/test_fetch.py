"""The example-data download: real HTTP on loopback, sha256 checks, tampered files refused and not kept."""
import hashlib
import http.server
import shutil
import subprocess
import sys

import pytest
from conftest import EXAMPLE_DATA, PROJECT_DIR, serve

from maskpair.data.fetch import (
    EXAMPLE_DESCRIPTION,
    example_registry,
    fetch_example_data,
)
from maskpair.data.inspection import describe
from maskpair.errors import DataError


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        CountingHandler.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def served(tmp_path):
    """Serve a writable copy of the example data; yields (base URL, served folder, list of requested paths)."""
    root = tmp_path / "served"
    shutil.copytree(EXAMPLE_DATA, root)
    CountingHandler.requests = []
    url, server = serve(root, CountingHandler)
    yield url, root, CountingHandler.requests
    server.shutdown()


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_downloads_and_verifies_everything(example_data):
    registry = example_registry()
    for rel, digest in registry.items():
        assert sha256(example_data / rel) == digest
    assert "dataset.json" not in registry  # a committed file, written by fetch, never downloaded
    assert (example_data / "dataset.json").read_text() == EXAMPLE_DESCRIPTION.read_text()
    assert describe(example_data).classes == ("background", "disc", "vertebra")


def test_rerun_downloads_only_what_is_missing(served, tmp_path):
    url, _, requests = served
    dest = tmp_path / "dest"
    fetch_example_data(dest, url, progress=False)
    assert len(requests) == 40
    (dest / "masks" / "7.npy").unlink()
    (dest / "images" / "3.png").write_bytes(b"corrupted locally")
    (dest / "dataset.json").write_text("{}")
    requests.clear()
    fetch_example_data(dest, url, progress=False)
    assert sorted(requests) == ["/images/3.png", "/masks/7.npy"]  # dataset.json is not a download
    assert sha256(dest / "images" / "3.png") == example_registry()["images/3.png"]
    assert (dest / "dataset.json").read_text() == EXAMPLE_DESCRIPTION.read_text()


def test_tampered_file_is_refused_and_not_kept(served, tmp_path):
    url, root, _ = served
    (root / "masks" / "12.npy").write_bytes((root / "masks" / "12.npy").read_bytes()[:-8] + b"tampered")
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match=r"masks/12.npy: sha256 mismatch") as err:
        fetch_example_data(dest, url, progress=False)
    assert len(err.value.problems) == 1
    assert not (dest / "masks" / "12.npy").exists()
    assert len(list((dest / "masks").iterdir())) == 19  # the good files are kept
    leftovers = [p for p in dest.rglob("*") if p.is_file() and p.suffix not in (".png", ".npy")]
    assert leftovers == [dest / "dataset.json"], leftovers  # no temporary download left behind


def test_cli_fetch_uses_env_url_and_exits_1_on_tampering(served, tmp_path):
    url, root, _ = served
    dest = tmp_path / "dest"
    env = {"SPINE_DATA_URL": url, "PATH": "/usr/bin:/bin"}
    ok = subprocess.run([sys.executable, str(PROJECT_DIR / "loader.py"), "fetch", str(dest)],
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "40 files present and verified" in ok.stdout
    (root / "images" / "5.png").write_bytes(b"evil")
    (dest / "images" / "5.png").unlink()
    bad = subprocess.run([sys.executable, str(PROJECT_DIR / "loader.py"), "fetch", str(dest)],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 1
    assert "images/5.png: sha256 mismatch" in bad.stderr and "Traceback" not in bad.stderr
    assert not (dest / "images" / "5.png").exists()


def test_unreachable_server_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="images/0.png: download from http://127.0.0.1:9/images/0.png failed") as err:
        fetch_example_data(tmp_path, "http://127.0.0.1:9/", progress=False)
    assert len(err.value.problems) == 2 and "39 more files not tried; host unreachable" in err.value.problems[1]


def test_missing_file_on_the_server_does_not_stop_the_others(served, tmp_path):
    url, root, _ = served
    (root / "images" / "4.png").unlink()
    with pytest.raises(DataError, match="images/4.png: download") as err:
        fetch_example_data(tmp_path / "dest", url, progress=False)
    assert len(err.value.problems) == 1
    assert len(list((tmp_path / "dest").rglob("*.*"))) == 39 + 1  # and dataset.json
