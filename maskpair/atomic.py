"""Writing a file so that no reader ever sees half of it: into a temporary file beside it, renamed over it."""
from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_atomically(path, save) -> Path:
    """Call save(temporary path) and rename the temporary file to `path` (parent folders created); on any
    failure the temporary file is removed and `path` keeps what it held. Files get the usual permissions
    (0666 less the umask), not a temporary file's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}")
    os.close(os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        save(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
