"""Output directories that are either complete or absent.

Every verb writes into a hidden sibling temp dir and renames it into place at the end, so
an error or a kill mid-run never leaves a half-written run directory, dataset or store.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from robalign.errors import OutputDirError


def default_output_dir(verb: str, root: str | Path = "runs") -> Path:
    """runs/<date>/<time>-<verb>: a fresh dated run directory."""
    now = datetime.datetime.now()
    return Path(root) / now.strftime("%Y-%m-%d") / f"{now.strftime('%H-%M-%S-%f')}-{verb}"


def check_output_dir(path: str | Path) -> Path:
    """Fail early, before any work, if `path` exists non-empty or its parent is unwritable."""
    path = Path(path).expanduser().absolute()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise OutputDirError(f"output_dir {str(path)!r} already exists and is not empty; choose a new path")
    parent = path.parent
    while not parent.exists():  # the nearest existing ancestor must let us create the rest
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputDirError(f"output_dir {str(path)!r} cannot be created: {str(parent)!r} is not writable")
    return path


@contextlib.contextmanager
def atomic_output_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp dir beside `path`; on success rename it to `path`, on error delete it."""
    path = check_output_dir(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputDirError(f"output_dir {str(path)!r} cannot be created: {err}") from None
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a run directory is for sharing
    if path.exists():
        path.rmdir()  # empty (checked above); rename cannot replace a directory
    os.rename(tmp, path)
