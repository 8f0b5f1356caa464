"""The command line: what each verb accepts and what its help says."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest

from core.alerting import AlertKind
from core.settings import Settings
from hazardwatch.cli import build_parser, main
from hazardwatch.demo import demo_settings
from simulators.district import DEFAULT_DEVICES, DEFAULT_INSTITUTIONS
from tickets.policy import load_policy


def test_demo_help_shows_the_demos_own_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"institutions (default {DEFAULT_INSTITUTIONS})" in text
    assert f"devices in total (default {DEFAULT_DEVICES})" in text
    assert "--broker" not in text and "--prefix" not in text and "--processes" not in text
    assert "--scenario" not in text  # the demo plays them all, as its story
    for option in ("--port", "--host", "--story-speed", "--offline-ticket-after", "--no-story"):
        assert option in text


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--port", "0"),
        ("--port", "http"),
        ("--story-speed", "-1"),
        ("--story-interval", "x"),
        ("--host", " "),
    ],
)
def test_demo_refuses_bad_ports_and_times(
    option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", option, value])
    error = capsys.readouterr().err
    assert f"argument {option}: " in error
    assert f"{value!r} is not a" in error or "the address is empty" in error


def test_demo_takes_host_and_port_and_writes_its_own_ticket_policy(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["demo", "--host", "0.0.0.0", "--port", "9090", "--offline-ticket-after", "45"]
    )
    settings = demo_settings(Settings(data_dir=tmp_path), args)
    assert (settings.api_host, settings.api_port) == ("0.0.0.0", 9090)
    assert settings.console_url == "http://0.0.0.0:9090"
    assert settings.tickets.policy is not None
    demo = load_policy(settings.tickets.policy)
    shipped = load_policy()
    assert demo.rules[AlertKind.DEVICE_OFFLINE].delay == timedelta(seconds=45)
    assert shipped.rules[AlertKind.DEVICE_OFFLINE].delay > timedelta(minutes=2)  # unchanged
    rest = {k: r for k, r in demo.rules.items() if k is not AlertKind.DEVICE_OFFLINE}
    assert rest == {k: r for k, r in shipped.rules.items() if k is not AlertKind.DEVICE_OFFLINE}


def test_demo_refuses_options_it_would_ignore() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--broker", "mqtt://elsewhere:1883"])


def test_simulate_keeps_broker_prefix_and_processes() -> None:
    args = build_parser().parse_args(
        ["simulate", "--broker", "mqtt://h:1", "--prefix", "x/v1", "--processes", "2"]
    )
    assert (args.broker, args.prefix, args.processes, args.institutions) == (
        "mqtt://h:1",
        "x/v1",
        2,
        3,
    )


def test_users_get_passwords_from_stdin_and_tokens_rotate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HAZARDWATCH_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("HAZARDWATCH_DATABASE_URL", raising=False)
    monkeypatch.setattr("hazardwatch.cli.setup_logging", lambda _level: None)

    def run(*args: str, stdin: str = "") -> tuple[int, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = main(list(args))
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    code, out = run(
        "user", "add", "zhao", "--role", "duty_officer", "--password-stdin", stdin="short\n"
    )
    assert (code, "at least 12 characters" in out) == (2, True)
    code, out = run(
        "user",
        "add",
        "zhao",
        "--role",
        "duty_officer",
        "--password-stdin",
        stdin="the duty desk's passphrase\n",
    )
    assert code == 0 and "logs in with a password" in out and "bearer token" not in out
    code, out = run("user", "add", "robot", "--role", "bureau", "--expires-days", "30")
    assert code == 0 and "token expires in 30 days" in out
    token = out.rsplit("bearer token: ", 1)[1].strip()
    code, out = run("user", "rotate-token", "robot", "--grace-hours", "1")
    assert code == 0 and "the old one works for 1 more hours" in out
    rotated = out.rsplit("bearer token: ", 1)[1].strip()
    code, out = run("user", "passwd", "zhao", "--password-stdin", stdin="zhao\n")
    assert code == 2 and "at least 12" in out
    code, out = run("user", "passwd", "zhao", "--password-stdin", stdin="a new passphrase!\n")
    assert code == 0 and "password of zhao set" in out
    code, out = run("user", "list")
    assert "zhao\tduty_officer\tzhao\tall institutions\tpassword\n" in out
    assert "robot\tbureau\trobot\tall institutions\ttoken until " in out
    assert "old token until" in out
    assert token not in out and rotated not in out and "passphrase" not in out

    from core.db import make_engine
    from core.passwords import Passwords
    from core.users import UserStore

    store = UserStore(make_engine(f"sqlite:///{tmp_path / 'hazardwatch.sqlite'}"))
    credentials = store.credentials("zhao")
    assert credentials is not None and credentials[1] is not None
    assert Passwords().verify("a new passphrase!", credentials[1])[0]
    assert store.by_token(token) is not None and store.by_token(rotated) is not None


def test_the_bootstrap_token_is_revoked_only_once_an_admin_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HAZARDWATCH_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("HAZARDWATCH_DATABASE_URL", raising=False)
    monkeypatch.setattr("hazardwatch.cli.setup_logging", lambda _level: None)
    (tmp_path / "admin_token").write_text("a generated bootstrap token\n")
    assert main(["admin-token", "revoke"]) == 2
    assert "add one first" in capsys.readouterr().err
    assert not (tmp_path / "admin_token.revoked").exists()
    monkeypatch.setattr("sys.stdin", io.StringIO("the first admin's passphrase\n"))
    assert main(["user", "add", "root", "--role", "admin", "--password-stdin"]) == 0
    assert main(["admin-token", "revoke"]) == 0
    assert (tmp_path / "admin_token.revoked").exists()
    assert not (tmp_path / "admin_token").exists(), "the generated token's file is gone"
