"""Evidence files (photos, reports, signed forms) kept on disk for the ledger's steps.

Files are stored by content: `attachments/ab/abcdef…` under the data dir, named by their
SHA-256. A file stored twice is kept once; a file is never changed or deleted once stored,
since the audit trail refers to it. Each is written to a temporary file, synced, and renamed
into place, so a crash leaves either the whole file or none.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import unicodedata
from pathlib import Path
from typing import BinaryIO

from tickets.models import Evidence

FOLDER = "attachments"
CHUNK = 1 << 16
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_TYPE = re.compile(r"^[\w.+-]+/[\w.+-]+$")


class AttachmentTooLargeError(ValueError):
    """The file is over the configured limit."""


def clean_name(name: str | None) -> str:
    """A file name fit to show and to offer for download: no folders, no control characters."""
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip(" .")
    return name[:200] or "attachment"


class AttachmentStore:
    """The folder of stored evidence files."""

    def __init__(self, data_dir: Path, max_bytes: int) -> None:
        """Files go to `data_dir/attachments`; each at most `max_bytes`."""
        self.data_dir = data_dir
        self.root = data_dir / FOLDER
        self.max_bytes = max_bytes

    def save(self, source: BinaryIO, name: str | None, content_type: str | None) -> Evidence:
        """Store the stream's bytes; the evidence that refers to them."""
        self.root.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        handle, temp_name = tempfile.mkstemp(dir=self.root, prefix=".upload-")
        temp = Path(temp_name)
        try:
            with os.fdopen(handle, "wb") as out:
                while chunk := source.read(CHUNK):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise AttachmentTooLargeError(
                            f"the file is larger than {self.max_bytes:,} bytes"
                        )
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            sha256 = digest.hexdigest()
            target = self.path(sha256)
            if target.exists():
                temp.unlink()
            else:
                target.parent.mkdir(exist_ok=True)
                temp.chmod(0o440)
                temp.rename(target)
                _sync_dir(target.parent)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        kind = (content_type or "").split(";", 1)[0].strip().lower()
        return Evidence(
            name=clean_name(name),
            path=target.relative_to(self.data_dir).as_posix(),
            sha256=sha256,
            size=size,
            content_type=kind if _CONTENT_TYPE.match(kind) else "application/octet-stream",
        )

    def path(self, sha256: str) -> Path:
        """Where the file with this digest is (or would be)."""
        if not _SHA256.match(sha256):
            raise ValueError(f"not a SHA-256 digest: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        """Whether a file with this digest is stored."""
        try:
            return self.path(sha256).is_file()
        except ValueError:
            return False


def _sync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
