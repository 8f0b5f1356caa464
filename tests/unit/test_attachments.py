"""Evidence files on disk: stored by content, whole or not at all, within the limit."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from tickets.attachments import AttachmentStore, AttachmentTooLargeError, clean_name


def test_a_file_is_stored_once_by_its_digest(tmp_path: Path) -> None:
    store = AttachmentStore(tmp_path, max_bytes=1 << 20)
    data = bytes(range(256)) * 700  # several chunks
    first = store.save(io.BytesIO(data), "整改照片.jpg", "image/jpeg; charset=binary")
    again = store.save(io.BytesIO(data), "copy.jpg", "image/jpeg")
    digest = hashlib.sha256(data).hexdigest()
    assert (first.sha256, first.size, first.content_type) == (digest, len(data), "image/jpeg")
    assert first.path == f"attachments/{digest[:2]}/{digest}" == again.path
    assert (tmp_path / first.path).read_bytes() == data
    assert (first.name, again.name) == ("整改照片.jpg", "copy.jpg")
    assert store.has(digest) and not store.has("0" * 64) and not store.has("../etc")
    files = [p for p in (tmp_path / "attachments").rglob("*") if p.is_file()]
    assert files == [tmp_path / first.path], "one copy, no temporary files left"


def test_a_file_over_the_limit_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    store = AttachmentStore(tmp_path, max_bytes=100_000)
    with pytest.raises(AttachmentTooLargeError, match="100,000 bytes"):
        store.save(io.BytesIO(b"x" * 100_001), "big.bin", None)
    assert [p for p in (tmp_path / "attachments").rglob("*") if p.is_file()] == []
    exact = store.save(io.BytesIO(b"x" * 100_000), "exact.bin", None)
    assert exact.size == 100_000 and exact.content_type == "application/octet-stream"


def test_names_and_types_cannot_smuggle_paths_or_headers(tmp_path: Path) -> None:
    assert clean_name("../../etc/passwd") == "passwd"
    assert clean_name("C:\\photos\\现场\u0000.jpg\r\n") == "现场.jpg"
    assert clean_name("..") == "attachment" and clean_name(None) == "attachment"
    store = AttachmentStore(tmp_path, max_bytes=1000)
    odd = store.save(io.BytesIO(b"1"), "a.txt", "text/html\r\nX-Injected: 1")
    assert odd.content_type == "application/octet-stream"
    with pytest.raises(ValueError, match="SHA-256"):
        store.path("../" + "a" * 61)
