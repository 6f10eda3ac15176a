"""The example data: 20 spine-MRI pairs from a pinned GitHub commit, each file sha256-checked."""
from __future__ import annotations

import os
import re
from pathlib import Path

from maskpair.data.description import DESCRIPTION_FILE
from maskpair.data.inspection import progress_bar
from maskpair.errors import DataError

EXAMPLE_DATA_URL = (
    "https://raw.githubusercontent.com/sulaimanvesal/vertebraeSegementation/"
    "edbc59b45b516a82a3c8ae11cd850ba6c450aa2e/input/"
)
EXAMPLE_DATA_DIR = Path("data") / "spine-mri"  # the default destination, relative to the current folder
EXAMPLE_FILES = Path(__file__).resolve().parent / "example"
EXAMPLE_REGISTRY = EXAMPLE_FILES / "SHA256SUMS"  # `sha256sum -c` format: digest, two spaces, relative path
EXAMPLE_DESCRIPTION = EXAMPLE_FILES / "spine-mri.dataset.json"  # written into the fetched folder


def example_registry(path: Path = EXAMPLE_REGISTRY) -> dict[str, str]:
    """{relative path: sha256} of the example files (the package's SHA256SUMS)."""
    lines = Path(path).read_text().splitlines()
    return {rel: digest for digest, rel in (line.split() for line in lines if line.strip())}


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _is_unreachable(err: Exception) -> bool:
    """True for connection-level failures (no route, DNS, refused), as opposed to one missing file."""
    import requests

    return isinstance(err, (requests.exceptions.ConnectionError, requests.exceptions.Timeout))


def _reason(err: Exception) -> str:
    """A one-line reason: the exception type and the innermost cause's message."""
    while err.__context__ is not None and not str(err).strip():
        err = err.__context__
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text[:200]}"


def write_example_description(dest) -> Path:
    """Write the example's dataset.json (a committed file, not a download) into `dest` unless it is there already."""
    target = Path(dest) / DESCRIPTION_FILE
    text = EXAMPLE_DESCRIPTION.read_text(encoding="utf-8")
    if not (target.is_file() and target.read_text(encoding="utf-8") == text):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return target


def fetch_example_data(dest=EXAMPLE_DATA_DIR, base_url: str | None = None, progress: bool = True) -> Path:
    """Download the example pairs that are missing or wrong into `dest`, each sha256-checked, and write the
    example's dataset.json beside them.

    base_url defaults to $SPINE_DATA_URL, else the pinned public commit. A file whose hash does not match
    is not kept; every failure is reported together at the end as a DataError.
    """
    import pooch

    pooch.get_logger().setLevel("WARNING")  # one progress bar, not a line per file
    base_url = base_url or os.environ.get("SPINE_DATA_URL") or EXAMPLE_DATA_URL
    base_url = base_url.rstrip("/") + "/"
    dest = Path(dest)
    write_example_description(dest)
    registry = example_registry()
    todo = [rel for rel, digest in registry.items() if not ((dest / rel).is_file() and _sha256(dest / rel) == digest)]
    failures = []
    for rel in progress_bar(todo, len(todo), progress and bool(todo), "downloading", "file"):
        target = dest / rel
        try:
            pooch.retrieve(base_url + rel, known_hash=f"sha256:{registry[rel]}", fname=target.name,
                           path=target.parent, progressbar=False)
        except ValueError as err:  # pooch's hash mismatch; it has already deleted the download
            got = re.search(r"[0-9a-f]{64}(?![\s\S]*[0-9a-f]{64})", str(err))
            failures.append(f"{rel}: sha256 mismatch (got {got.group(0)[:12] if got else '?'}..., expected "
                            f"{registry[rel][:12]}...) from {base_url + rel}; not saved")
        except Exception as err:  # network errors: requests/urllib raise many types
            failures.append(f"{rel}: download from {base_url + rel} failed ({_reason(err)})")
            if _is_unreachable(err):  # the same for every other file: say it once
                failures.append(f"{dest}: {len(todo) - todo.index(rel) - 1} more files not tried; host "
                                f"unreachable (set SPINE_DATA_URL to a mirror of {EXAMPLE_DATA_URL})")
                break
        if target.exists() and _sha256(target) != registry[rel]:
            target.unlink()  # never leave a file that fails its hash
    if failures:
        raise DataError(failures)
    return dest
