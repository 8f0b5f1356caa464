"""Voice and SMS through Tencent Cloud's SDK against a local recording HTTP server.

The server stands in for sms.tencentcloudapi.com and vms.tencentcloudapi.com: it records each
request and answers as the documented APIs do. This checks what we send (action, signature,
phone, Chinese template parameters) and that no secret reaches the logs; not the live cloud.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from alerts.events import to_event
from alerts.phone import PhoneError, PhoneOutput, TencentPhone
from core.alerting import Alert, AlertAction, AlertChange, AlertKind, AlertState, Severity
from core.eventlog import JournalEventLog
from core.registry.models import Institution, Person
from core.settings import PhoneSettings
from tests.servers import free_port

SECRET_KEY = "sk-DO-NOT-LOG-8c1f0e"
AT = datetime(2026, 12, 2, 13, 5, 9, tzinfo=UTC)
HOME = Institution(id="inst-1", name="阳光养老院", town="城关镇",
                   principal=Person(name="张三", phone="13900000009"))  # fmt: skip


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class CloudRecorder:
    """Answers SendSms and SendTtsVoice like Tencent Cloud; refuses while told so."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.refuse = False
        requests, recorder = self.requests, self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                requests.append(Recorded(self.path, dict(self.headers.items()), body))
                action = self.headers["X-TC-Action"]
                if recorder.refuse:
                    answer: dict[str, Any] = {"Error": {"Code": "LimitExceeded", "Message": "x"}}
                elif action == "SendSms":
                    answer = {"SendStatusSet": [{"PhoneNumber": p, "Code": "Ok", "SerialNo": "1"}
                                                for p in body["PhoneNumberSet"]]}  # fmt: skip
                else:
                    answer = {"SendStatus": {"CallId": "c1", "SessionContext": ""}}
                data = json.dumps({"Response": answer | {"RequestId": "r1"}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def cloud() -> Iterator[CloudRecorder]:
    recorder = CloudRecorder()
    yield recorder
    recorder.close()


def settings(cloud: CloudRecorder) -> PhoneSettings:
    return PhoneSettings.model_validate(
        {
            "provider": "tencent",
            "sms_endpoint": cloud.url,
            "voice_endpoint": cloud.url,
            "secret_id": "AKIDtest123",
            "secret_key": SECRET_KEY,
            "sms_app_id": "1400000001",
            "sms_sign_name": "区民政局",
            "sms_template_id": "100001",
            "voice_app_id": "1400000002",
            "voice_template_id": "200002",
            "duty_phones": ["13800000001"],
            "sms_phones": ["+8613700000002"],
            "sms_principal": True,
            "call_after_min": 5,
        }
    )


def change(action: AlertAction, escalations: int = 0) -> AlertChange:
    alert = Alert(id="a1", kind=AlertKind.GAS_LEAK, severity=Severity.CRITICAL,
                  state=AlertState.ACTIVE, institution="inst-1", device="gas-1", zone="厨房",
                  raised_at=AT, updated_at=AT, last_seen_at=AT,
                  escalations=escalations)  # fmt: skip
    return AlertChange(alert=alert, action=action, at=AT)


def test_an_unacknowledged_gas_leak_texts_then_calls_the_duty_phone(
    cloud: CloudRecorder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # the SDK's own debug lines too
    log = JournalEventLog(tmp_path / "events", fsync=False)
    phone = settings(cloud)
    output = PhoneOutput(phone, TencentPhone(phone), {"inst-1": HOME}.get, log,
                         log.checkpoints, escalation_interval_s=120)  # fmt: skip
    output.load()
    # Raised, then escalated every 2 min: 2, 4, 6 min; the call is due at 6 (first >= 5).
    log.append([to_event("gas-1", change(AlertAction.RAISED))])
    log.append([to_event("gas-1", change(AlertAction.ESCALATED, n)) for n in (1, 2, 3)])
    output.handle(log.cursor(0).next_batch(10))
    assert output.position == 4 and (output.texts, output.calls) == (1, 1)

    sms, call = cloud.requests
    assert sms.headers["X-TC-Action"] == "SendSms" and sms.headers["X-TC-Version"] == "2021-01-11"
    assert call.headers["X-TC-Action"] == "SendTtsVoice"
    for request in (sms, call):
        assert request.path == "/"
        authorization = request.headers["Authorization"]
        assert authorization.startswith("TC3-HMAC-SHA256 Credential=AKIDtest123/")
        assert "Signature=" in authorization and len(authorization.split("Signature=")[1]) == 64
        assert SECRET_KEY not in json.dumps([request.headers, request.body])
    assert sms.body["PhoneNumberSet"] == ["+8613700000002", "+8613900000009"]
    assert sms.body["SignName"] == "区民政局" and sms.body["TemplateId"] == "100001"
    assert sms.body["TemplateParamSet"] == ["阳光养老院", "燃气泄漏", "厨房", "12-02 21:05"]
    assert call.body["CalledNumber"] == "+8613800000001" and call.body["PlayTimes"] == 2
    assert call.body["TemplateParamSet"] == ["阳光养老院", "燃气泄漏", "厨房"]
    assert SECRET_KEY not in caplog.text, "not even in the SDK's debug lines"
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("alerts"))
    assert "138****0001" in ours and "13800000001" not in ours, "phones masked in our logs"


def test_a_refusal_is_an_error_and_the_change_comes_again(
    cloud: CloudRecorder, tmp_path: Path
) -> None:
    log = JournalEventLog(tmp_path / "events", fsync=False)
    phone = settings(cloud)
    output = PhoneOutput(phone, TencentPhone(phone), {"inst-1": HOME}.get, log,
                         log.checkpoints, escalation_interval_s=300)  # fmt: skip
    output.load()
    log.append([to_event("gas-1", change(AlertAction.ESCALATED, 1))])
    cloud.refuse = True
    with pytest.raises(PhoneError, match="LimitExceeded"):
        output.handle(log.cursor(0).next_batch(10))
    assert output.position == 0, "not taken: it comes again"
    cloud.refuse = False
    output.handle(log.cursor(0).next_batch(10))
    assert [r.headers["X-TC-Action"] for r in cloud.requests] == ["SendTtsVoice"] * 2
    assert output.position == 1
