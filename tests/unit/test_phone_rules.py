"""When the duty phone is called, and the phone settings' checks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from alerts.phone import calls_due, e164, masked
from core.alerting import Alert, AlertAction, AlertChange, AlertKind, AlertState, Severity
from core.errors import ConfigError
from core.settings import load_settings

AT = datetime(2026, 12, 2, 13, 5, 9, tzinfo=UTC)


def escalated(n: int, kind: AlertKind = AlertKind.SMOKE_ALARM, **update: Any) -> AlertChange:
    values: dict[str, Any] = {"id": "a1", "kind": kind, "severity": Severity.CRITICAL,
              "state": AlertState.ACTIVE, "institution": "i", "device": "d", "raised_at": AT,
              "updated_at": AT, "last_seen_at": AT, "escalations": n}  # fmt: skip
    return AlertChange(alert=Alert(**(values | update)), action=AlertAction.ESCALATED, at=AT)


def test_the_call_goes_with_the_first_escalation_at_or_after_each_span() -> None:
    # Escalations every 120 s, a call after 5 min: at 6 min, then at 10 (and 16, 20 ...).
    due = [n for n in range(1, 11) if calls_due(escalated(n), 120, 5)]
    assert due == [3, 5, 8, 10]
    assert [n for n in range(1, 4) if calls_due(escalated(n), 300, 5)] == [1, 2, 3]


def test_no_call_for_other_kinds_or_an_acknowledged_alert() -> None:
    assert not calls_due(escalated(3, AlertKind.DEVICE_OFFLINE), 120, 5)
    assert not calls_due(escalated(3, state=AlertState.ACKNOWLEDGED), 120, 5)
    raised = escalated(3).model_copy(update={"action": AlertAction.RAISED})
    assert not calls_due(raised, 120, 5)
    assert calls_due(escalated(3, AlertKind.CO_ALARM), 120, 5)


def test_phone_numbers_for_logs_and_the_provider() -> None:
    assert masked("+8613800000001") == "+86138****0001"
    assert e164("13800000001") == "+8613800000001" and e164("+85291234567") == "+85291234567"


def test_an_incomplete_provider_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAZARDWATCH_ALERTS__PHONE__PROVIDER", "tencent")
    monkeypatch.setenv("HAZARDWATCH_ALERTS__PHONE__DUTY_PHONES", '["13800000001"]')
    with pytest.raises(ConfigError, match="needs secret_id, secret_key, voice_app_id"):
        load_settings()
    monkeypatch.setenv("HAZARDWATCH_ALERTS__PHONE__DUTY_PHONES", '["@all"]')
    with pytest.raises(ConfigError, match="not a phone number"):
        load_settings()


def test_the_phone_secrets_come_from_files_and_are_hidden(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    key = tmp_path / "key"
    key.write_text("sk-very-secret\n")
    monkeypatch.setenv("HAZARDWATCH_ALERTS__PHONE__SECRET_KEY_FILE", str(key))
    monkeypatch.setenv("HAZARDWATCH_ALERTS__PHONE__SECRET_ID", "AKIDsecretid")
    settings = load_settings()
    assert settings.alerts.phone.secret_key is not None
    assert settings.alerts.phone.secret_key.get_secret_value() == "sk-very-secret"
    shown = str(settings.redacted())
    assert "sk-very-secret" not in shown and "AKIDsecretid" not in shown
