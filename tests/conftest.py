"""Shared fixtures: the example data served on loopback from what `make test` fetched, downloaded through the
real hash-checked fetch. A user's clone has nothing beside it, so nothing here reads outside the project."""
import functools
import http.server
import sys
import threading
from pathlib import Path

import pytest

from maskpair.data.fetch import example_registry, fetch_example_data

PROJECT_DIR = Path(__file__).resolve().parents[1]
EXAMPLE_DATA = PROJECT_DIR / "data" / "spine-mri"  # `make test` fetches it first (make data)
CLI = [sys.executable, "-m", "maskpair"]  # the `maskpair` command, as this interpreter runs it


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(folder: Path, handler=_QuietHandler):
    """(base URL, server) of a loopback HTTP server over `folder`; call server.shutdown() when done."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/", server


@pytest.fixture(scope="session")
def example_data_server():
    """Base URL of a loopback server over the example data in data/spine-mri."""
    missing = [rel for rel in example_registry() if not (EXAMPLE_DATA / rel).is_file()]
    assert not missing, f"{EXAMPLE_DATA}: example data not fetched ({len(missing)} files missing): run `make data`"
    url, server = serve(EXAMPLE_DATA)
    yield url
    server.shutdown()


@pytest.fixture(scope="session")
def example_data(example_data_server, tmp_path_factory):
    """The 20 real pairs, downloaded through the real hash-checked fetch from the loopback server."""
    return fetch_example_data(tmp_path_factory.mktemp("spine") / "spine-mri", example_data_server, progress=False)
