"""Content-addressed files: a blob's name is the sha256 of its bytes.

The same video or array file registered twice is stored once, a file can never be
silently replaced by different content, and a name from outside (a URL) can be checked
for shape before it ever touches the filesystem: 64 lowercase hex characters, nothing else.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from robalign.errors import RobalignError

SHA256 = re.compile(r"[0-9a-f]{64}")
KINDS = {"video": ".mp4", "arrays": ".safetensors"}


class BadBlobName(RobalignError):
    """A blob name that is not a sha256 hex digest (rejected before any path is built)."""


class BlobStore:
    """Files under `root/<kind>/<sha[:2]>/<sha><ext>`, written atomically."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def put(self, kind: str, data: bytes) -> str:
        """Store `data` (idempotent) and return its sha256 hex digest."""
        sha = hashlib.sha256(data).hexdigest()
        path = self.path(kind, sha)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # temp file + fsync + rename: a kill mid-write never leaves a truncated blob
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".partial")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return sha

    def path(self, kind: str, sha: str) -> Path:
        """Where blob `sha` of `kind` lives; raises BadBlobName unless `sha` is a sha256 digest."""
        if kind not in KINDS:
            raise RobalignError(f"unknown blob kind {kind!r}; valid choices: {', '.join(KINDS)}")
        if not isinstance(sha, str) or not SHA256.fullmatch(sha):
            raise BadBlobName(f"blob id must be a sha256 digest (64 lowercase hex characters); got {str(sha)[:80]!r}")
        return self.root / kind / sha[:2] / f"{sha}{KINDS[kind]}"

    def get(self, kind: str, sha: str) -> bytes:
        """The bytes of blob `sha`, checked against their name (a corrupted file is an error)."""
        path = self.path(kind, sha)
        if not path.exists():
            raise RobalignError(f"{kind} {sha} is not in the store at {self.root}")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha:
            raise RobalignError(f"{kind} file {path} is corrupted: its sha256 no longer matches its name")
        return data
