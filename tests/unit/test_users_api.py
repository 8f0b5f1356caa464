# ruff: noqa: F811 - the fixtures imported from test_session_api are the parameters here
"""Accounts through the API, for admins only: list, add, reset a password, revoke."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from core.audit import audit_log
from tests.unit.test_ledger import INSTITUTION
from tests.unit.test_session_api import (  # noqa: F401 - fixtures for the tests here
    ADMIN_TOKEN,
    PASSWORD,
    Site,
    bearer,
    client,
    log_in,
    migrated,
    site,
)

NEW = {
    "name": "chen",
    "display_name": "陈护理长",
    "role": "institution",
    "institutions": ["inst-1"],
    "password": "chen's own long passphrase",
}


async def test_only_an_admin_manages_accounts(site: Site, client: httpx.AsyncClient) -> None:
    site.context.registry.upsert_institutions([INSTITUTION])
    for token in (site.tokens["boss"], site.tokens["wu"]):
        for method, path, body in (
            ("GET", "/api/v1/users", None),
            ("POST", "/api/v1/users", NEW),
            ("POST", "/api/v1/users/zhao/password", {"password": "x" * 20}),
            ("DELETE", "/api/v1/users/zhao", None),
        ):
            answer = await client.request(method, path, json=body, headers=bearer(token))
            assert answer.status_code == 403, (method, path, answer.text)
            assert "cannot manage accounts" in answer.json()["detail"]
    assert len((await client.get("/api/v1/users", headers=bearer(ADMIN_TOKEN))).json()) == 3


async def test_an_admin_adds_resets_and_revokes(site: Site, client: httpx.AsyncClient) -> None:
    site.context.registry.upsert_institutions([INSTITUTION])
    admin = bearer(ADMIN_TOKEN)
    made = await client.post("/api/v1/users", json={**NEW, "token": True}, headers=admin)
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["account"]["role"] == "institution" and body["account"]["has_password"]
    assert body["token"] and "password" not in made.text.replace('"has_password"', "")
    assert (await client.get("/api/v1/tickets", headers=bearer(body["token"]))).status_code == 200
    again = await client.post("/api/v1/users", json=NEW, headers=admin)
    assert again.status_code == 409 and "exists already" in again.json()["detail"]

    # The new person logs in; an admin's reset ends that session and the new password works.
    answer = await client.post(
        "/api/v1/session", json={"username": "chen", "password": NEW["password"]}
    )
    assert answer.status_code == 200
    reset = await client.post(
        "/api/v1/users/chen/password", json={"password": "a fresh long passphrase"}, headers=admin
    )
    assert reset.status_code == 200 and reset.json() == {"sessions_ended": 1}
    assert (await client.get("/api/v1/session")).status_code == 401
    relog = await client.post(
        "/api/v1/session", json={"username": "chen", "password": "a fresh long passphrase"}
    )
    assert relog.status_code == 200

    gone = await client.delete("/api/v1/users/chen", headers=admin)
    assert gone.status_code == 204
    assert (await client.get("/api/v1/session")).status_code == 401
    listed = {a["name"]: a for a in (await client.get("/api/v1/users", headers=admin)).json()}
    assert listed["chen"]["disabled"] is True

    # Who did it, from where: in the audit log.
    with site.accounts.audit._engine.connect() as connection:
        site.accounts.audit.flush()
        rows = connection.execute(select(audit_log).where(audit_log.c.object == "user:chen"))
        entries = [(r.action, r.actor, r.address) for r in rows]
    assert ("user_added", "admin", "10.1.2.3") in entries
    assert ("password_reset", "admin", "10.1.2.3") in entries
    assert ("user_revoked", "admin", "10.1.2.3") in entries


async def test_bad_accounts_get_a_reason(site: Site, client: httpx.AsyncClient) -> None:
    site.context.registry.upsert_institutions([INSTITUTION])
    admin = bearer(ADMIN_TOKEN)
    cases = [
        ({**NEW, "institutions": ["inst-9"]}, "no institution inst-9"),
        ({**NEW, "password": "short"}, "at least"),
        ({**NEW, "password": None}, "give a password, ask for a token, or both"),
        ({**NEW, "institutions": []}, "needs at least one institution"),
        ({**NEW, "role": "town_office", "institutions": []}, "needs at least one town"),
        ({**NEW, "name": "../root"}, "string_pattern_mismatch"),
        ({**NEW, "role": "king"}, "enum"),
    ]
    for body, reason in cases:
        answer = await client.post("/api/v1/users", json=body, headers=admin)
        assert answer.status_code == 422, (body, answer.text)
        assert reason in answer.text, (reason, answer.text)
    missing = await client.post(
        "/api/v1/users/nobody/password", json={"password": "x" * 20}, headers=admin
    )
    assert missing.status_code == 404
    assert (await client.delete("/api/v1/users/nobody", headers=admin)).status_code == 404


async def test_an_admin_cannot_revoke_their_own_account(
    site: Site, client: httpx.AsyncClient
) -> None:
    site.context.registry.upsert_institutions([INSTITUTION])
    made = await client.post(
        "/api/v1/users",
        json={"name": "root", "display_name": "管理员", "role": "admin", "password": PASSWORD},
        headers=bearer(ADMIN_TOKEN),
    )
    assert made.status_code == 201
    csrf = await log_in(client, "root")
    answer = await client.delete("/api/v1/users/root", headers={"X-CSRF-Token": csrf})
    assert answer.status_code == 409 and "own account" in answer.json()["detail"]
