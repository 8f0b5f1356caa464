"""The command line: what each verb accepts and what its help says."""

from __future__ import annotations

import pytest

from hazardwatch.cli import build_parser


def test_demo_help_shows_the_demos_own_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "institutions (default 5)" in text
    assert "devices in total (default 40)" in text
    assert "--broker" not in text and "--prefix" not in text and "--processes" not in text


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
