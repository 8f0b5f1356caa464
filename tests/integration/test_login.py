"""People log in, against a real `hazardwatch run` (tests/integration/service_process.py).

1. A duty officer logs in: the cookie's attributes, who-am-I, the cookie on reads, changes
   only with the CSRF token, the live stream with the cookie alone (as a browser's
   EventSource), Secure behind an HTTPS proxy, logout; the audit log for the bureau and not
   for an institution.
2. Lock-out with a growing wait (the right password refused meanwhile, an unknown name
   answered alike), per address too; a password change ends the other sessions; a revoked
   user's session and stream end; token rotation; the bootstrap token revoked.

Every test ends by reading the service's log: no password, token, cookie or CSRF token in it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

from tests.integration.mqtt_tools import wait_until
from tests.integration.service_process import TOKEN, ServiceProcess, change
from tests.integration.sites import Site

PASSWORD = "the duty desk's passphrase"
NEW_PASSWORD = "a new passphrase for the night shift"
WU_PASSWORD = "the home's own passphrase"
LOCKOUT = {  # small numbers and short waits, so that the test can watch them
    "HAZARDWATCH_AUTH__LOCKOUT_USER_FAILURES": "3",
    "HAZARDWATCH_AUTH__LOCKOUT_ADDRESS_FAILURES": "6",
    "HAZARDWATCH_AUTH__LOCKOUT_BASE_S": "2",
    "HAZARDWATCH_AUTH__LOCKOUT_MAX_S": "8",
}
WRONG = {"detail": "wrong user name or password"}


class Browser:
    """A client that keeps cookies, as a browser does, from one address (X-Forwarded-For:
    the test connects from 127.0.0.1, a trusted proxy by default)."""

    def __init__(self, service: ServiceProcess, address: str | None = None) -> None:
        headers = {"X-Forwarded-For": address} if address else {}
        self.client = httpx.Client(base_url=service.base, timeout=15, headers=headers)
        self.csrf: str | None = None

    def login(self, name: str, password: str, **headers: str) -> httpx.Response:
        answer = self.client.post(
            "/api/v1/session", json={"username": name, "password": password}, headers=headers
        )
        if answer.status_code == 200:
            self.csrf = answer.json()["csrf_token"]
        return answer

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def change(self, method: str, path: str, *, csrf: bool = True, **kwargs: Any) -> httpx.Response:
        headers = {"X-CSRF-Token": self.csrf} if csrf and self.csrf else {}
        return self.client.request(method, path, headers=headers, **kwargs)

    @property
    def session_id(self) -> str:
        value = self.client.cookies.get("hw_session")
        assert value is not None
        return value

    def close(self) -> None:
        self.client.close()


class CookieStream:
    """GET /api/v1/stream with the browser's cookie and nothing else, read in a thread."""

    def __init__(self, browser: Browser) -> None:
        self.lines: list[str] = []
        self.status = 0
        self.ended = threading.Event()
        opened = threading.Event()
        cookies = httpx.Cookies(browser.client.cookies)

        url = str(browser.client.base_url.join("/api/v1/stream"))

        def read() -> None:
            try:
                with (
                    contextlib.suppress(httpx.HTTPError),
                    httpx.Client(timeout=httpx.Timeout(10, read=60), cookies=cookies) as client,
                    client.stream("GET", url) as answer,
                ):
                    self.status = answer.status_code
                    opened.set()
                    for line in answer.iter_lines():
                        self.lines.append(line)
            finally:
                opened.set()
                self.ended.set()

        threading.Thread(target=read, daemon=True).start()
        assert opened.wait(10), "the stream did not answer"

    def wait_for(self, text: str, timeout: float = 20) -> None:
        wait_until(lambda: any(text in line for line in self.lines), timeout, f"{text!r}")


@contextlib.contextmanager
def browsers(service: ServiceProcess) -> Iterator[list[Browser]]:
    opened: list[Browser] = []
    yield opened
    for browser in opened:
        browser.close()


def attributes(set_cookie: str) -> tuple[str, dict[str, str]]:
    """The cookie's name and its attributes, lower-cased."""
    first, *rest = [part.strip() for part in set_cookie.split(";")]
    found = {}
    for part in rest:
        key, _, value = part.partition("=")
        found[key.lower()] = value.lower()
    return first.split("=", 1)[0], found


def audit(service: ServiceProcess, token: str, **params: str) -> list[dict[str, Any]]:
    answer = service.api("GET", "/api/v1/audit", token=token, params={"limit": "1000", **params})
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-total-count"] == str(len(answer.json()))
    entries: list[dict[str, Any]] = answer.json()
    return entries


def no_secret_in_the_log(service: ServiceProcess, secrets: list[str]) -> None:
    log = service.log_path.read_text(errors="replace")
    assert "starting with" in log, "the log is the service's"
    leaked = [s[:6] + "…" for s in secrets if s and s in log]
    assert leaked == [], f"secrets in the service's log: {leaked}"


def test_a_duty_officer_logs_in_and_works_with_the_cookie(site_factory: Any) -> None:
    site: Site = site_factory(**LOCKOUT)
    service = site.service
    service.add_user("zhao", "duty_officer", password=PASSWORD)
    boss = service.add_user("boss", "bureau")
    wu = service.add_user("wu", "institution", "--institution", "inst-1")
    with browsers(service) as opened:
        desk = Browser(service)
        opened.append(desk)
        answer = desk.login("zhao", PASSWORD)
        assert answer.status_code == 200, answer.text
        name, cookie = attributes(answer.headers["set-cookie"])
        assert name == "hw_session"
        assert "httponly" in cookie and cookie["samesite"] == "strict" and cookie["path"] == "/"
        assert "secure" not in cookie, "plain http: no Secure"
        assert cookie["max-age"] == str(12 * 3600)
        assert answer.json()["csrf_token"] and desk.session_id not in answer.text

        me = desk.get("/api/v1/session").json()
        assert (me["user"]["name"], me["user"]["role"], me["auth"]) == (
            "zhao",
            "duty_officer",
            "session",
        )
        assert me["csrf_token"] == desk.csrf and me["visible_institutions"] is None
        assert desk.get("/api/v1/alerts").status_code == 200

        # The live stream with the cookie alone, as EventSource sends it.
        stream = CookieStream(desk)
        assert stream.status == 200
        site.send("smoke-1", "event", {"type": "fault", "code": "sensor_fault"})
        alert = site.stream.wait_for(change("raised", "device_fault", "smoke-1"), "the fault")
        stream.wait_for(alert["alert"]["id"])
        alert_id = alert["alert"]["id"]

        # Changes with the cookie need the CSRF token; then they work, recorded with the
        # address they came from.
        ack = f"/api/v1/alerts/{alert_id}/ack"
        refused = desk.change("POST", ack, csrf=False, json={"note": "到场处置"})
        assert refused.status_code == 403 and "X-CSRF-Token header is missing" in refused.text
        assert desk.change("POST", ack, json={"note": "到场处置"}).status_code == 200

        # Behind an HTTPS proxy (X-Forwarded-Proto from a trusted address): Secure, __Host-.
        behind = Browser(service)
        opened.append(behind)
        secure = behind.login("zhao", PASSWORD, **{"X-Forwarded-Proto": "https"})
        name, cookie = attributes(secure.headers["set-cookie"])
        assert name == "__Host-hw_session" and "secure" in cookie and cookie["path"] == "/"

        # Logout: the cookie stops working at once, and the open stream ends.
        session_id = desk.session_id
        assert desk.change("DELETE", "/api/v1/session").status_code == 204
        again = httpx.get(
            f"{service.base}/api/v1/alerts", headers={"cookie": f"hw_session={session_id}"}
        )
        assert again.status_code == 401 and "log in again" in again.text
        assert stream.ended.wait(20), "the stream of a logged-out session is still open"
        assert ": the session has ended" in stream.lines

    # The audit log: the bureau reads it, an institution does not.
    entries = audit(service, boss, actor="zhao")
    assert [e["action"] for e in reversed(entries)] == [
        "login",
        "alert_acknowledged",
        "login",
        "logout",
    ]
    login, acked = entries[-1], entries[-2]
    assert login["address"] == "127.0.0.1" and login["object"].startswith("session:")
    assert acked["object"] == f"alert:{alert_id}" and acked["detail"]["note"] == "到场处置"
    assert acked["detail"]["state"]["to"] in ("acknowledged", "resolved")
    added = audit(service, boss, action="user_added")
    assert {e["object"] for e in added} == {"user:zhao", "user:boss", "user:wu"}
    assert all(e["actor"].startswith("cli:") and e["address"] == "local" for e in added)
    refused = service.api("GET", "/api/v1/audit", token=wu)
    assert refused.status_code == 403 and "bureau and admins" in refused.text
    no_secret_in_the_log(service, [PASSWORD, session_id, str(me["csrf_token"]), boss, wu, TOKEN])


def test_lock_out_password_change_revocation_and_tokens(site_factory: Any) -> None:
    site: Site = site_factory(**LOCKOUT)
    service = site.service
    service.add_user("zhao", "duty_officer", password=PASSWORD)
    boss = service.add_user("boss", "bureau")
    wu_token = service.add_user(
        "wu", "institution", "--institution", "inst-1", password=WU_PASSWORD
    )
    secrets = [PASSWORD, NEW_PASSWORD, WU_PASSWORD, boss, wu_token, TOKEN]
    with browsers(service) as opened:
        # --- three wrong passwords: locked, even the right one, and so is a name nobody has
        guesser = Browser(service, "10.0.0.1")
        opened.append(guesser)
        for name, address in (("zhao", "10.0.0.1"), ("nobody", "10.0.0.2")):
            if name == "nobody":
                guesser = Browser(service, address)
                opened.append(guesser)
            for n in range(3):
                wrong = guesser.login(name, f"guess number {n}!")
                assert (wrong.status_code, wrong.json()) == (401, WRONG)
            locked = guesser.login(name, PASSWORD)
            assert locked.status_code == 429, locked.text
            assert locked.json() == {"detail": "too many failed logins: try again in 2 s"}
            assert locked.headers["retry-after"] == "2"
        guesser = opened[0]
        time.sleep(2.1)
        wrong = guesser.login("zhao", "one guess more!!")  # the wait doubles
        assert (wrong.status_code, wrong.json()) == (401, WRONG)
        locked = guesser.login("zhao", PASSWORD)
        assert (locked.status_code, locked.headers["retry-after"]) == (429, "4")
        time.sleep(4.1)
        assert guesser.login("zhao", PASSWORD).status_code == 200, "the wait is over"

        # --- per address: six names from one address lock the address for everyone
        sprayer = Browser(service, "10.0.0.66")
        opened.append(sprayer)
        for n in range(6):
            assert sprayer.login(f"guess{n}", "a wrong password").status_code == 401
        assert sprayer.login("zhao", PASSWORD).status_code == 429
        elsewhere = Browser(service, "10.0.0.67")
        opened.append(elsewhere)
        assert elsewhere.login("zhao", PASSWORD).status_code == 200

        # --- a password change ends the other sessions, not this one
        here, there = Browser(service, "10.0.1.1"), Browser(service, "10.0.1.2")
        opened.extend([here, there])
        assert here.login("zhao", PASSWORD).status_code == 200
        assert there.login("zhao", PASSWORD).status_code == 200
        body = {"old": PASSWORD, "new": NEW_PASSWORD}
        assert (
            here.change("POST", "/api/v1/session/password", csrf=False, json=body).status_code
            == 403
        )
        changed = here.change("POST", "/api/v1/session/password", json=body)
        assert changed.status_code == 204, changed.text
        assert here.get("/api/v1/session").status_code == 200
        assert there.get("/api/v1/session").status_code == 401
        assert guesser.get("/api/v1/session").status_code == 401
        stale = Browser(service, "10.0.1.3")
        opened.append(stale)
        assert stale.login("zhao", PASSWORD).status_code == 401, "the old password is gone"
        fresh = Browser(service, "10.0.1.4")
        opened.append(fresh)
        assert fresh.login("zhao", NEW_PASSWORD).status_code == 200

        # --- a revoked user's session ends at once, their stream within seconds
        home = Browser(service, "10.0.2.1")
        opened.append(home)
        assert home.login("wu", WU_PASSWORD).status_code == 200
        stream = CookieStream(home)
        assert stream.status == 200
        service.hazardwatch("user", "revoke", "wu")
        assert home.get("/api/v1/session").status_code == 401
        assert stream.ended.wait(20), "the revoked user's stream is still open"
        wait_until(
            lambda: service.api("GET", "/api/v1/alerts", token=wu_token).status_code == 401,
            timeout=15,
            what="the revoked user's token to be refused",
        )

    # --- token rotation: the old token stops (within the token cache), the new one works
    assert service.api("GET", "/api/v1/alerts", token=boss).status_code == 200
    out = service.hazardwatch("user", "rotate-token", "boss")
    rotated = out.rsplit("bearer token: ", 1)[1].strip()
    assert rotated != boss and "the old one stops working now" in out
    assert service.api("GET", "/api/v1/alerts", token=rotated).status_code == 200
    wait_until(
        lambda: service.api("GET", "/api/v1/alerts", token=boss).status_code == 401,
        timeout=15,
        what="the rotated token to be refused",
    )
    out = service.hazardwatch("user", "rotate-token", "boss", "--grace-hours", "1")
    newest = out.rsplit("bearer token: ", 1)[1].strip()
    assert service.api("GET", "/api/v1/alerts", token=newest).status_code == 200
    time.sleep(11)  # past the token cache: the grace holds, not the cache
    assert service.api("GET", "/api/v1/alerts", token=rotated).status_code == 200
    secrets += [rotated, newest]

    # --- the bootstrap token, revoked once a real admin exists
    service.add_user("root", "admin", password="the admin's own passphrase")
    assert service.api("GET", "/api/v1/alerts").status_code == 200
    service.hazardwatch("admin-token", "revoke")
    wait_until(
        lambda: service.api("GET", "/api/v1/alerts").status_code == 401,
        timeout=10,
        what="the bootstrap token to be refused",
    )
    root = Browser(service, "10.0.3.1")
    assert root.login("root", "the admin's own passphrase").status_code == 200
    root.close()
    secrets.append("the admin's own passphrase")

    # --- all of it in the audit log
    actions = {(e["actor"], e["action"]) for e in audit(service, newest)}
    assert {
        ("zhao", "login_failed"),
        ("-", "login_failed"),
        ("zhao", "login_refused_locked"),
        ("-", "login_refused_locked"),
        ("zhao", "locked_out"),
        ("zhao", "password_changed"),
        ("zhao", "login"),
        ("root", "login"),
    } <= actions
    by_cli = {action for actor, action in actions if actor.startswith("cli:")}
    assert {"user_revoked", "token_rotated", "admin_token_revoked", "user_added"} <= by_cli
    lockouts = audit(service, newest, action="locked_out")
    assert {e["object"] for e in lockouts} >= {"user:zhao", "address:10.0.0.66"}
    failed = audit(service, newest, action="login_failed")
    assert {e["address"] for e in failed} >= {"10.0.0.1", "10.0.0.66"}
    assert all("guess" not in str(e) for e in failed), "no typed password is kept"
    no_secret_in_the_log(service, secrets)
