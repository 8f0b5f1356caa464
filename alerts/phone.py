"""Voice calls and SMS: who is called or texted for which alert change, and the provider.

A consumer of the event log like the other outputs (at least once: the position is saved
after each change handled, so a crash repeats at most the call or SMS in flight):

- **SMS** to `sms_phones` (and the institution principal with `sms_principal`) when an alert
  at `sms_severity` or above is raised or comes back;
- **voice** to the `duty_phones` when a fire, smoke, gas or CO alarm is still unacknowledged
  after `call_after_min`: no timer of its own, the alert engine's escalations (`escalated`,
  every `escalation_interval_s` while the alarm is active) are the clock, and the call goes
  with the first escalation at or after each `call_after_min` since the alarm was raised.
  Acknowledging stops escalation, and so the calls.

The provider is Tencent Cloud (SMS `SendSms` 2021-01-11, voice `SendTtsVoice` of VMS
2020-09-02) through its official SDK, whose endpoint (scheme, host, port) can be set: the
tests point it at a local recording server.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from datetime import tzinfo
from typing import Protocol
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import (
    TencentCloudSDKException,
)
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.sms.v20210111 import models as sms_models
from tencentcloud.sms.v20210111 import sms_client
from tencentcloud.vms.v20200902 import models as vms_models
from tencentcloud.vms.v20200902 import vms_client

from alerts.escape import inert
from alerts.events import from_event
from alerts.notices import KIND, local_time
from alerts.notify import InstitutionLookup
from core.alerting import AlertAction, AlertChange, AlertState
from core.consumers import Checkpointed
from core.errors import HazardwatchError
from core.eventlog import ALERT, FileCheckpoints, LogEvent
from core.ports import EventLog
from core.settings import PhoneSettings

log = logging.getLogger(__name__)

URGENT = frozenset({"fire_confirmed", "smoke_alarm", "gas_leak", "co_alarm"})
PARAM_CHARS = 20  # providers cap each template variable; longer values are refused
_NUMBER = re.compile(r"\+?[0-9]{6,15}")


class PhoneError(HazardwatchError):
    """The provider did not take the call or SMS."""


class PhoneProvider(Protocol):
    """Sends template SMS and template voice calls; raises PhoneError when not taken."""

    def sms(self, phones: Sequence[str], params: Sequence[str]) -> None:
        """One SMS of the configured template to each phone."""
        ...

    def call(self, phone: str, params: Sequence[str]) -> None:
        """One voice call of the configured template."""
        ...


def masked(phone: str) -> str:
    """A phone number fit for logs: `+86138****0001`."""
    return phone[:-8] + "****" + phone[-4:] if len(phone) > 8 else "****"


def e164(phone: str) -> str:
    """Mainland numbers without a country code get +86."""
    return phone if phone.startswith("+") else f"+86{phone}"


def _profile(endpoint: str | None, default_host: str, timeout_s: float) -> ClientProfile:
    scheme, host = "https", default_host
    if endpoint is not None:
        parts = urlsplit(endpoint)
        scheme, host = parts.scheme, parts.netloc
    http = HttpProfile(protocol=scheme, endpoint=host, reqTimeout=math.ceil(timeout_s))
    return ClientProfile(httpProfile=http)


class TencentPhone:
    """Tencent Cloud SMS and voice (VMS) through the official SDK."""

    def __init__(self, settings: PhoneSettings) -> None:
        assert settings.secret_id is not None and settings.secret_key is not None  # validated
        self._settings = settings
        secret = credential.Credential(
            settings.secret_id.get_secret_value(), settings.secret_key.get_secret_value()
        )
        timeout = settings.timeout_s
        self._sms = sms_client.SmsClient(
            secret,
            settings.region,
            _profile(settings.sms_endpoint, "sms.tencentcloudapi.com", timeout),
        )
        self._vms = vms_client.VmsClient(
            secret,
            settings.region,
            _profile(settings.voice_endpoint, "vms.tencentcloudapi.com", timeout),
        )

    def sms(self, phones: Sequence[str], params: Sequence[str]) -> None:
        """SendSms; every number must be taken (`Code` "Ok")."""
        request = sms_models.SendSmsRequest()
        request.PhoneNumberSet = [e164(p) for p in phones]
        request.SmsSdkAppId = self._settings.sms_app_id
        request.SignName = self._settings.sms_sign_name
        request.TemplateId = self._settings.sms_template_id
        request.TemplateParamSet = list(params)
        try:
            response = self._sms.SendSms(request)
        except TencentCloudSDKException as exc:
            raise PhoneError(f"SendSms: {exc.get_code()}: {exc.get_message()}") from None
        refused = [s for s in response.SendStatusSet or [] if s.Code != "Ok"]
        if refused:
            codes = ", ".join(f"{masked(s.PhoneNumber or '')} {s.Code}" for s in refused)
            raise PhoneError(f"SendSms refused: {codes}")

    def call(self, phone: str, params: Sequence[str]) -> None:
        """SendTtsVoice: the template read out `voice_play_times` times."""
        request = vms_models.SendTtsVoiceRequest()
        request.TemplateId = self._settings.voice_template_id
        request.TemplateParamSet = list(params)
        request.CalledNumber = e164(phone)
        request.VoiceSdkAppid = self._settings.voice_app_id
        request.PlayTimes = self._settings.voice_play_times
        try:
            self._vms.SendTtsVoice(request)
        except TencentCloudSDKException as exc:
            raise PhoneError(f"SendTtsVoice: {exc.get_code()}: {exc.get_message()}") from None


def build_provider(settings: PhoneSettings) -> PhoneProvider | None:
    """The configured provider, or None."""
    return TencentPhone(settings) if settings.provider == "tencent" else None


def calls_due(change: AlertChange, interval_s: float, after_min: float) -> bool:
    """Whether this escalation is the first at or after a multiple of `after_min`."""
    alert = change.alert
    if change.action is not AlertAction.ESCALATED or alert.state is not AlertState.ACTIVE:
        return False
    if alert.kind.value not in URGENT:
        return False
    span = after_min * 60
    now, before = alert.escalations * interval_s, (alert.escalations - 1) * interval_s
    return math.floor(now / span) > math.floor(before / span)


class PhoneOutput(Checkpointed):
    """Calls the duty phones and sends SMS for the alert changes that ask for them."""

    name = "phone"

    def __init__(
        self,
        settings: PhoneSettings,
        provider: PhoneProvider,
        institutions: InstitutionLookup,
        events: EventLog,
        checkpoints: FileCheckpoints,
        *,
        escalation_interval_s: float,
        zone: tzinfo | None = None,
    ) -> None:
        super().__init__(events, checkpoints)
        self._settings = settings
        self._provider = provider
        self._institutions = institutions
        self._interval_s = escalation_interval_s
        self._zone = zone or ZoneInfo("Asia/Shanghai")
        self.calls = 0
        self.texts = 0

    def handle(self, events: Sequence[LogEvent]) -> None:
        """Act on each alert change; the position is saved after each (at least once)."""
        done = self.position
        try:
            for event in events:
                if event.kind == ALERT:
                    self._act(from_event(event)[1])
                done = event.position
                self._save(done)
        finally:
            self._save(done)

    def _act(self, change: AlertChange) -> None:
        settings, alert = self._settings, change.alert
        if settings.duty_phones and calls_due(change, self._interval_s, settings.call_after_min):
            params = self._params(change)[:3]
            for phone in settings.duty_phones:
                self._provider.call(phone, params)
                self.calls += 1
                log.warning("alert %s: called the duty phone %s", alert.id, masked(phone))
        texted = change.action in (AlertAction.RAISED, AlertAction.REACTIVATED)
        if texted and alert.severity.rank >= settings.sms_severity.rank:
            phones = self._sms_phones(alert.institution)
            if phones:
                self._provider.sms(phones, self._params(change))
                self.texts += 1
                log.info("alert %s: SMS to %d phones", alert.id, len(phones))

    def _sms_phones(self, institution_id: str) -> list[str]:
        phones = list(self._settings.sms_phones)
        institution = self._institutions(institution_id)
        principal = institution.principal if institution else None
        number = principal.phone if principal and self._settings.sms_principal else None
        if number and _NUMBER.fullmatch(number) and number not in phones:
            phones.append(number)
        return phones

    def _params(self, change: AlertChange) -> list[str]:
        """Template variables, in Chinese: institution, kind, place, local time."""
        alert = change.alert
        institution = self._institutions(alert.institution)
        name = institution.name if institution else alert.institution
        place = alert.zone or alert.device
        when = local_time(change.at, self._zone)[5:16]  # 12-02 21:05
        kind = KIND["zh-CN"].get(alert.kind.value, alert.kind.value)
        return [inert(v, PARAM_CHARS) for v in (name, kind, place, when)]
