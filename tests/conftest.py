"""Shared fixtures: legacy Keras set up first, the example data served on loopback, synthetic datasets."""
import functools
import http.server
import os
import sys
import threading
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import legacy_keras  # noqa: E402,F401  (before anything can import TensorFlow)

SHARED_DATA = Path(os.environ.get("SPINE_SHARED_DATA", PROJECT_DIR.parent / "shared" / "data" / "spine-mri"))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def example_data_server():
    """Base URL of a loopback HTTP server over the shared copy of the example data."""
    assert (SHARED_DATA / "SHA256SUMS").is_file(), f"{SHARED_DATA}: shared example data not found (set SPINE_SHARED_DATA)"
    handler = functools.partial(_QuietHandler, directory=str(SHARED_DATA))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.fixture(scope="session")
def example_data(example_data_server, tmp_path_factory):
    """The 20 real pairs, downloaded through the real hash-checked fetch from the loopback server."""
    import loader

    return loader.fetch_example_data(tmp_path_factory.mktemp("spine") / "spine-mri", example_data_server, progress=False)
