"""Evidence files on disk: stored by content, whole or not at all, within the limits."""

from __future__ import annotations

import hashlib
import io
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.clock import FakeClock
from core.db import make_engine, upgrade
from tests.unit.test_ledger import INSTITUTION
from tickets.attachments import (
    AttachmentQuotaError,
    AttachmentStore,
    AttachmentTooLargeError,
    clean_name,
)
from tickets.ledger import Ledger
from tickets.models import Evidence, Ticket, TicketAction, TicketSource
from tickets.policy import load_policy
from tickets.store import TicketStore


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


# --- the quota of an institution ------------------------------------------------------------------


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def quota_store(tmp_path: Path, quota: int, usage: dict[str, dict[str, int]]) -> AttachmentStore:
    return AttachmentStore(
        tmp_path, max_bytes=1 << 20, quota_bytes=quota, usage=lambda i: usage.get(i, {})
    )


def stored_files(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "attachments").rglob("*") if p.is_file())


def test_an_upload_over_the_institutions_quota_is_refused_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    kept = b"a" * 200_000
    usage = {"inst-1": {digest_of(kept): len(kept)}}
    store = quota_store(tmp_path, 250_000, usage)
    with pytest.raises(AttachmentQuotaError) as refused:
        store.save(io.BytesIO(b"b" * 60_000), "photo.jpg", "image/jpeg", institution="inst-1")
    error = refused.value
    assert (error.institution, error.used, error.size, error.quota) == (
        "inst-1",
        200_000,
        60_000,
        250_000,
    )
    assert "quota of 250,000 bytes" in str(error)
    assert stored_files(tmp_path) == []  # neither the file nor its temporary copy
    fits = store.save(io.BytesIO(b"b" * 50_000), "photo.jpg", None, institution="inst-1")
    assert fits.size == 50_000 and store.has(fits.sha256 or "")
    assert store.usage("inst-1") == 200_000  # what the ledger refers to, not what is on disk


def test_a_file_the_institution_keeps_already_costs_nothing_and_others_have_their_own(
    tmp_path: Path,
) -> None:
    kept = b"a" * 200_000
    usage = {"inst-1": {digest_of(kept): len(kept)}}
    store = quota_store(tmp_path, 210_000, usage)
    again = store.save(io.BytesIO(kept), "same.jpg", None, institution="inst-1")
    assert again.sha256 == digest_of(kept)
    other = store.save(io.BytesIO(b"c" * 200_000), "x.jpg", None, institution="inst-2")
    assert other.size == 200_000
    unchecked = store.save(io.BytesIO(b"d" * 300_000), "y.jpg", None)  # no institution named
    assert unchecked.size == 300_000
    with pytest.raises(AttachmentQuotaError):
        store.save(io.BytesIO(b"c" * 20_000), "z.jpg", None, institution="inst-1")


def test_the_usage_is_the_distinct_files_of_the_institutions_tickets(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    upgrade(url)
    tickets = TicketStore(make_engine(url))
    places = {i: INSTITUTION.model_copy(update={"id": i}) for i in ("inst-1", "inst-2")}
    ledger = Ledger(tickets, load_policy(), places.get, FakeClock())
    attachments = AttachmentStore(
        tmp_path, max_bytes=1 << 20, quota_bytes=1 << 30, usage=tickets.evidence_files
    )

    def upload(institution: str, data: bytes) -> Evidence:
        return attachments.save(io.BytesIO(data), "f.bin", None, institution=institution)

    photo, form = upload("inst-1", b"p" * 1000), upload("inst-1", b"f" * 300)
    link = Evidence(name="report", url="https://example.org/report.pdf")
    first = open_ticket(ledger, "inst-1", [photo, link])
    second = open_ticket(ledger, "inst-1", [photo])
    ledger.act(first.id, TicketAction.COMMENTED, "li", evidence=[form, photo])
    elsewhere = upload("inst-2", b"e" * 5000)
    open_ticket(ledger, "inst-2", [elsewhere])
    assert second.id != first.id
    assert tickets.evidence_files("inst-1") == {photo.sha256: 1000, form.sha256: 300}
    assert attachments.usage("inst-1") == 1300
    assert tickets.evidence_files("inst-3") == {}
    assert tickets.referenced_files() == {photo.sha256, form.sha256, elsewhere.sha256}


def open_ticket(ledger: Ledger, institution: str, evidence: list[Evidence]) -> Ticket:
    return ledger.create(
        actor="li",
        source=TicketSource.SELF_INSPECTION,
        institution=institution,
        category="evacuation_blocked",
        title="走廊堵塞",
        due_at=datetime(2026, 12, 1, tzinfo=UTC),
        evidence=evidence,
    )


# --- orphans ------------------------------------------------------------------------------------


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_orphans_and_leftover_uploads_older_than_the_age_are_removed(tmp_path: Path) -> None:
    store = AttachmentStore(tmp_path, max_bytes=1 << 20)
    referenced = store.save(io.BytesIO(b"kept"), "a", None)
    orphan = store.save(io.BytesIO(b"orphan"), "b", None)
    young = store.save(io.BytesIO(b"young orphan"), "c", None)
    crashed = tmp_path / "attachments" / ".upload-abc123"
    crashed.write_bytes(b"half a file")
    fresh_upload = tmp_path / "attachments" / ".upload-def456"
    fresh_upload.write_bytes(b"being written")
    for path in (referenced.path, orphan.path):
        age(tmp_path / str(path), 7200)
    age(crashed, 7200)
    removed = store.remove_orphans({referenced.sha256 or ""}, timedelta(hours=1))
    assert sorted(removed) == sorted([tmp_path / str(orphan.path), crashed])
    assert stored_files(tmp_path) == sorted(
        [tmp_path / str(referenced.path), tmp_path / str(young.path), fresh_upload]
    )
    assert store.remove_orphans({referenced.sha256 or ""}, timedelta(hours=1)) == []


def test_an_orphan_uploaded_again_is_young_again(tmp_path: Path) -> None:
    store = AttachmentStore(tmp_path, max_bytes=1 << 20)
    first = store.save(io.BytesIO(b"the same photo"), "a", None)
    age(tmp_path / str(first.path), 7200)
    store.save(io.BytesIO(b"the same photo"), "b", None)  # its step is about to refer to it
    assert store.remove_orphans(set(), timedelta(hours=1)) == []
    assert store.has(first.sha256 or "")


def test_remove_orphans_without_any_upload_yet(tmp_path: Path) -> None:
    assert AttachmentStore(tmp_path, max_bytes=10).remove_orphans(set(), timedelta(0)) == []
