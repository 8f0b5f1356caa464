"""Evidence files (photos, reports, signed forms) kept on disk for the ledger's steps.

Files are stored by content: `attachments/ab/abcdef…` under the data dir, named by their
SHA-256. A file stored twice is kept once; a file the audit trail refers to is never changed
or deleted. Each is written to a temporary file, synced, and renamed into place, so a crash
leaves either the whole file or none — and at most a temporary file, which `remove_orphans`
deletes later, with the stored files no audit line refers to.

Each institution has a quota: the stored files its tickets' audit trails refer to, each
counted once, may not exceed it; an upload that would go over it is refused.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

from tickets.models import Evidence

FOLDER = "attachments"
CHUNK = 1 << 16
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_TYPE = re.compile(r"^[\w.+-]+/[\w.+-]+$")


class AttachmentTooLargeError(ValueError):
    """The file is over the configured limit."""


class AttachmentQuotaError(Exception):
    """The institution's stored evidence files would exceed its quota with this one."""

    def __init__(self, institution: str, used: int, size: int, quota: int) -> None:
        super().__init__(
            f"institution {institution} keeps {used:,} bytes of evidence files; this one of "
            f"{size:,} bytes would exceed its quota of {quota:,} bytes"
        )
        self.institution = institution
        self.used = used
        self.size = size
        self.quota = quota


# The stored files an institution's tickets refer to, sha256 -> size (TicketStore.evidence_files).
Usage = Callable[[str], Mapping[str, int]]


def clean_name(name: str | None) -> str:
    """A file name fit to show and to offer for download: no folders, no control characters."""
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip(" .")
    return name[:200] or "attachment"


class AttachmentStore:
    """The folder of stored evidence files."""

    def __init__(
        self,
        data_dir: Path,
        max_bytes: int,
        *,
        quota_bytes: int | None = None,
        usage: Usage | None = None,
    ) -> None:
        """Files go to `data_dir/attachments`; each at most `max_bytes`.

        With `quota_bytes` and `usage`, an institution's files together at most `quota_bytes`.
        """
        self.data_dir = data_dir
        self.root = data_dir / FOLDER
        self.max_bytes = max_bytes
        self.quota_bytes = quota_bytes
        self._usage = usage
        # Placing a file and sweeping orphans take turns: a sweep must not delete a stored file
        # between an upload finding it there and the upload's step referring to it.
        self._placing = threading.Lock()

    def save(
        self,
        source: BinaryIO,
        name: str | None,
        content_type: str | None,
        *,
        institution: str | None = None,
    ) -> Evidence:
        """Store the stream's bytes; the evidence that refers to them.

        With `institution` (the ticket's), AttachmentQuotaError when the file would take the
        institution over its quota; a file its tickets refer to already costs nothing.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(dir=self.root, prefix=".upload-")
        temp = Path(temp_name)
        try:
            with os.fdopen(handle, "wb") as out:
                sha256, size = self._copy(source, out)
            if institution is not None:
                self._check_quota(institution, sha256, size)
            target = self._place(temp, sha256)
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

    def _place(self, temp: Path, sha256: str) -> Path:
        """Move the synced temporary file to its place, unless the same file is there."""
        target = self.path(sha256)
        with self._placing:
            if target.exists():
                temp.unlink()
                # About to be referred to again: young again, so that remove_orphans leaves it.
                os.utime(target)
            else:
                target.parent.mkdir(exist_ok=True)
                temp.chmod(0o440)
                temp.rename(target)
                _sync_dir(target.parent)
        return target

    def _copy(self, source: BinaryIO, out: BinaryIO) -> tuple[str, int]:
        """Copy within the size limit and sync; the SHA-256 and the size."""
        digest = hashlib.sha256()
        size = 0
        while chunk := source.read(CHUNK):
            size += len(chunk)
            if size > self.max_bytes:
                raise AttachmentTooLargeError(f"the file is larger than {self.max_bytes:,} bytes")
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
        return digest.hexdigest(), size

    def _check_quota(self, institution: str, sha256: str, size: int) -> None:
        if self.quota_bytes is None or self._usage is None:
            return
        files = self._usage(institution)
        if sha256 in files:
            return  # its tickets refer to this very file already: nothing more is kept
        used = sum(files.values())
        if used + size > self.quota_bytes:
            raise AttachmentQuotaError(institution, used, size, self.quota_bytes)

    def usage(self, institution: str) -> int:
        """Bytes of the stored files the institution's tickets refer to (0 without a quota)."""
        return sum(self._usage(institution).values()) if self._usage is not None else 0

    def remove_orphans(self, referenced: set[str], older_than: timedelta) -> list[Path]:
        """Delete stored files no audit line refers to and leftover temporary files.

        `referenced`: the sha256 of every file the audit trails refer to
        (TicketStore.referenced_files). Only files last written more than `older_than` ago
        go: a file just uploaded is referred to a moment later, when its step is stored.
        Returns the paths deleted.
        """
        if not self.root.is_dir():
            return []
        before = time.time() - older_than.total_seconds()
        removed: list[Path] = []
        for entry in sorted(self.root.iterdir()):
            if entry.is_dir() and len(entry.name) == 2:
                orphans = [f for f in entry.iterdir() if f.name not in referenced]
                removed += self._remove_old(orphans, before)
            elif entry.name.startswith(".upload-"):
                removed += self._remove_old([entry], before)
        return removed

    def _remove_old(self, files: Iterable[Path], before: float) -> list[Path]:
        """Delete the regular files among `files` last modified before `before` (epoch s)."""
        removed: list[Path] = []
        for path in files:
            with self._placing:
                try:
                    if path.is_file() and path.stat().st_mtime < before:
                        path.unlink()
                        removed.append(path)
                except FileNotFoundError:  # gone meanwhile (another sweep): nothing to do
                    continue
        return removed

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
