"""Settings: exactly the variables of contract section 4, from the environment or a TOML file."""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from core.alerting import Severity
from core.errors import ConfigError

# The embedded broker (no HAZARDWATCH_MQTT_URL) listens on MQTT's IANA port unless told.
EMBEDDED_BROKER_PORT = 1883


class MqttEndpoint(BaseModel):
    """A broker address parsed from `mqtt://user:pass@host:port` or `mqtts://…`."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: SecretStr | None = None


def parse_mqtt_url(url: str) -> MqttEndpoint:
    """Split an MQTT URL into its parts; raise ValueError when it is not one."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"scheme must be mqtt:// or mqtts://, got {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise ValueError("the URL names no host")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise ValueError(f"bad port: {exc}") from None
    password = SecretStr(unquote(parts.password)) if parts.password is not None else None
    username = unquote(parts.username) if parts.username else None
    return MqttEndpoint(
        host=parts.hostname, port=port, tls=tls, username=username, password=password
    )


_SECTION = ConfigDict(extra="forbid", frozen=True)


class Webhook(BaseModel):
    """One notification target: a generic JSON receiver or a WeCom/DingTalk group robot."""

    model_config = _SECTION
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="name in logs and the outbox")
    url: HttpUrl = Field(description="where to POST")
    format: Literal["generic", "wecom", "dingtalk"] = Field(
        default="generic", description="body shape: generic JSON, WeCom or DingTalk robot"
    )
    min_severity: Severity = Field(default=Severity.MAJOR, description="least severity sent")
    level: int = Field(
        default=0,
        ge=0,
        le=3,
        description="escalation level from which it is told: 0 duty officer, 1 institution "
        "principal, 2 town office, 3 district bureau",
    )
    towns: list[str] = Field(
        default_factory=list, description="only institutions of these towns (empty: all)"
    )
    secret: SecretStr | None = Field(default=None, description="DingTalk robot signing secret")
    language: Literal["zh-CN", "en"] | None = Field(
        default=None, description="language of the notices; unset: [display] language"
    )
    msgtype: Literal["text", "markdown"] = Field(
        default="text",
        description="WeCom/DingTalk message type: text (@-mentions by phone) or markdown "
        "(bold labels, a link; WeCom markdown mentions nobody)",
    )


_PHONE_NUMBER = r"^\+?[0-9]{6,15}$"


class PhoneSettings(BaseModel):
    """Voice calls and SMS through a cloud provider (alerts/phone.py, docs/notifications.md)."""

    model_config = _SECTION
    provider: Literal["none", "tencent"] = Field(
        default="none", description="none, or tencent (Tencent Cloud SMS and VMS)"
    )
    sms_endpoint: str | None = Field(
        default=None, description="http(s)://host[:port] of the SMS API; unset: the provider's"
    )
    voice_endpoint: str | None = Field(
        default=None, description="http(s)://host[:port] of the voice API; unset: the provider's"
    )
    region: str = Field(default="ap-guangzhou", min_length=1, description="provider region")
    secret_id: SecretStr | None = Field(default=None, description="API key id (SecretId)")
    secret_key: SecretStr | None = Field(default=None, description="API key secret (SecretKey)")
    sms_app_id: str | None = Field(default=None, description="SMS application id (SmsSdkAppId)")
    sms_sign_name: str | None = Field(default=None, description="approved SMS signature (签名)")
    sms_template_id: str | None = Field(
        default=None, description="approved SMS template, parameters {1}..{5} (docs)"
    )
    voice_app_id: str | None = Field(default=None, description="voice application id")
    voice_template_id: str | None = Field(
        default=None, description="approved voice (TTS) template, parameters {1}..{3} (docs)"
    )
    voice_play_times: int = Field(default=2, ge=1, le=3, description="times the call repeats")
    duty_phones: list[str] = Field(
        default_factory=list, description="duty phones called for unacknowledged critical alarms"
    )
    sms_phones: list[str] = Field(
        default_factory=list, description="phones that get an SMS of each alarm at sms_severity"
    )
    sms_principal: bool = Field(
        default=False, description="the institution principal's phone gets the SMS too"
    )
    sms_severity: Severity = Field(default=Severity.CRITICAL, description="least severity by SMS")
    call_after_min: float = Field(
        default=5,
        gt=0,
        le=1440,
        description="a critical alarm nobody acknowledged this long calls the duty phones "
        "(at the first escalation at or after it; again each such span)",
    )
    timeout_s: float = Field(default=10, gt=0, le=60, description="longest wait for the provider")

    @field_validator("duty_phones", "sms_phones")
    @classmethod
    def _check_phones(cls, value: list[str]) -> list[str]:
        for phone in value:
            if not re.fullmatch(_PHONE_NUMBER, phone):
                raise ValueError(f"not a phone number: {phone!r} (digits, optional leading +)")
        return value

    @field_validator("sms_endpoint", "voice_endpoint")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @model_validator(mode="after")
    def _check_complete(self) -> PhoneSettings:
        if self.provider == "none":
            return self
        missing = [k for k in ("secret_id", "secret_key") if getattr(self, k) is None]
        if self.duty_phones:
            missing += [k for k in ("voice_app_id", "voice_template_id") if not getattr(self, k)]
        if self.sms_phones or self.sms_principal:
            needed = ("sms_app_id", "sms_sign_name", "sms_template_id")
            missing += [k for k in needed if not getattr(self, k)]
        if missing:
            raise ValueError(f"provider {self.provider} needs {', '.join(missing)}")
        return self


class AlertSettings(BaseModel):
    """Default thresholds (a device's registry entry may override them) and notification."""

    model_config = _SECTION
    smoke_db_m: float = Field(default=0.15, gt=0, description="smoke alarm threshold, dB/m")
    smoke_readings: int = Field(
        default=2, ge=1, le=100, description="consecutive readings at the threshold to alarm"
    )
    gas_major_lel_pct: float = Field(
        default=25, gt=0, le=100, description="gas level 1, %LEL (GB/T 50493-2019)"
    )
    gas_critical_lel_pct: float = Field(
        default=50, gt=0, le=100, description="gas level 2, %LEL (GB/T 50493-2019)"
    )
    gas_hysteresis_lel_pct: float = Field(
        default=5, ge=0, le=50, description="how far below a level gas must fall to leave it"
    )
    co_ppm: float = Field(default=50, gt=0, description="CO alarm threshold, ppm")
    clear_ratio: float = Field(
        default=0.8, gt=0, le=1, description="smoke and CO clear below threshold × this"
    )
    battery_pct: float = Field(default=20, ge=0, le=100, description="low battery at or below")
    battery_hysteresis_pct: float = Field(
        default=5, ge=0, le=50, description="battery must rise this far above to clear"
    )
    offline_factor: float = Field(
        default=2.5, ge=1, le=100, description="offline after this × heartbeat of silence"
    )
    fire_window_s: float = Field(
        default=120, gt=0, description="two detectors of a zone within this: fire_confirmed"
    )
    test_window_s: float = Field(
        default=600, ge=0, description="after a test-button press, alarms are only recorded"
    )
    nuisance_alarms: int = Field(
        default=5, ge=1, description="more unconfirmed smoke alarms than this in 24 h: a fault"
    )
    escalation_interval_s: float = Field(
        default=300, gt=0, description="an unacknowledged critical alert is sent again after"
    )
    webhooks: list[Webhook] = Field(default_factory=list, description="notification targets")
    robot_messages_per_min: int = Field(
        default=20,
        ge=1,
        le=600,
        description="messages one WeCom/DingTalk robot takes a minute (their documented limit: 20)",
    )
    phone: PhoneSettings = Field(
        default_factory=PhoneSettings,
        description="voice calls and SMS ([alerts.phone] in TOML, HAZARDWATCH_ALERTS__PHONE__*)",
    )
    robot_merge_window_s: float = Field(
        default=30,
        ge=0,
        le=600,
        description="a robot notice of a non-critical kind waits this long for others of its kind "
        "and town, to go as one message",
    )

    @model_validator(mode="after")
    def _check_gas_levels(self) -> AlertSettings:
        if self.gas_critical_lel_pct <= self.gas_major_lel_pct:
            raise ValueError("gas_critical_lel_pct must be above gas_major_lel_pct")
        return self


class TicketSettings(BaseModel):
    """The hazard ledger."""

    model_config = _SECTION
    policy: Path | None = Field(
        default=None, description="ticket policy YAML; unset: the shipped tickets/policy.yaml"
    )
    attachment_max_mb: float = Field(
        default=20.0, gt=0, description="largest evidence file accepted, MiB (photos, PDFs)"
    )
    attachment_quota_mb: float = Field(
        default=2048.0,
        gt=0,
        description="evidence files of one institution's tickets together, at most, MiB",
    )


class IngestSettings(BaseModel):
    """Checks on what devices send, beyond the contract's fixed ones."""

    model_config = _SECTION
    max_past_days: float = Field(
        default=30,
        gt=0,
        le=3650,
        description="a device ts older than this before its receive time is a dead letter, days",
    )


class DeadLetterSettings(BaseModel):
    """How much of the dead-letter store is kept (enforced by DeadLetterStore.prune)."""

    model_config = _SECTION
    keep_days: float = Field(
        default=30, gt=0, description="dead letters older than this are deleted, days"
    )
    max_mib: float = Field(
        default=512, gt=0, description="beyond this size the oldest dead letters are deleted, MiB"
    )


class EventSettings(BaseModel):
    """The event log of alert and ticket changes (data dir `events/`)."""

    model_config = _SECTION
    retention_days: float = Field(
        default=7,
        gt=0,
        description="events are kept at least this long (a live-stream client away for less "
        "resumes exactly), and until every consumer has handled them",
    )
    max_mib: int = Field(
        default=2048,
        ge=16,
        description="above this size, events every consumer has handled are dropped sooner",
    )


class StreamSettings(BaseModel):
    """Live-stream connections (GET /api/v1/stream)."""

    model_config = _SECTION
    max_per_user: int = Field(
        default=8, ge=1, le=1000, description="live streams one user may have open; more: 429"
    )
    max_total: int = Field(
        default=500, ge=1, le=100_000, description="live streams open in all; more: 429"
    )


class DatabaseSettings(BaseModel):
    """How long the SQL database may take: a hung one must never hang the service."""

    model_config = _SECTION
    connect_timeout_s: float = Field(default=5, gt=0, le=120, description="to connect")
    statement_timeout_s: float = Field(
        default=15, gt=0, le=3600, description="longest statement (PostgreSQL statement_timeout)"
    )
    lock_timeout_s: float = Field(
        default=5, gt=0, le=600, description="longest wait for a lock (PostgreSQL lock_timeout)"
    )
    patience_s: float = Field(
        default=3,
        gt=0,
        le=60,
        description="a statement unanswered this long means the database is away: requests "
        "that need it get 503 at once, and /readyz says so",
    )


class SpoolSettings(BaseModel):
    """Ingest's spools on disk (data dir `raw/` and `spool/`)."""

    model_config = _SECTION
    max_mib: int = Field(
        default=8192,
        ge=16,
        description="cap of each spool; when full, messages are not acknowledged (the broker "
        "holds them) and readiness fails until the store takes the backlog",
    )


FILE_SUFFIX = "_FILE"


class EnvWithFilesSettingsSource(EnvSettingsSource):
    """The environment, where any `HAZARDWATCH_X_FILE` stands for `HAZARDWATCH_X` read from
    that file (one trailing newline dropped): secrets from Docker or systemd credentials
    files, never in the environment itself, in `ps` output or in a compose file."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        env = dict(super()._load_env_vars())
        prefix = self.env_prefix if self.case_sensitive else self.env_prefix.lower()
        suffix = FILE_SUFFIX if self.case_sensitive else FILE_SUFFIX.lower()
        for key in [k for k in env if k.startswith(prefix) and k.endswith(suffix)]:
            path, target = env.pop(key), key[: -len(suffix)]
            if not path:
                continue
            name = target.upper()
            if env.get(target):
                raise ConfigError(f"{name} and {name}{FILE_SUFFIX} are both set: keep one")
            try:
                value = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                raise ConfigError(f"{name}{FILE_SUFFIX}: cannot read {path}: {why}") from None
            env[target] = value.removesuffix("\n").removesuffix("\r")
        return env


# A bearer token shorter than this is guessable: the admin token and the metrics token.
MIN_TOKEN_CHARS = 16


class ApiSettings(BaseModel):
    """The doors of the HTTP API (its address is `api_host` and `api_port`, of the contract):
    request size limits, HTTPS, who may read /metrics, whether the docs are served."""

    model_config = _SECTION
    max_body_kib: int = Field(
        default=64,
        ge=1,
        le=65536,
        description="largest request body but an evidence upload, KiB (413 above it)",
    )
    tls_certfile: Path | None = Field(
        default=None,
        description="PEM certificate (chain) of the API; with tls_keyfile the API serves HTTPS "
        "only; unset: plain HTTP (put a TLS reverse proxy in front)",
    )
    tls_keyfile: Path | None = Field(
        default=None, description="PEM private key of tls_certfile, unencrypted (mode 0600)"
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="bearer token that opens /metrics and the detail of /readyz, and nothing "
        "else; the admin token opens them too",
    )
    docs: bool = Field(
        default=True, description="serve /docs (Swagger UI, from local files) and /openapi.json"
    )

    @field_validator("metrics_token")
    @classmethod
    def _check_metrics_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_TOKEN_CHARS:
            raise ValueError(f"must be at least {MIN_TOKEN_CHARS} characters")
        return value

    @model_validator(mode="after")
    def _check_tls(self) -> ApiSettings:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("tls_certfile and tls_keyfile go together: set both or neither")
        if self.tls_certfile is not None and self.tls_keyfile is not None:
            try:  # a wrong file stops the start here, not in the HTTP task after it
                ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                    self.tls_certfile, self.tls_keyfile, password=_no_password
                )
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"cannot use tls_certfile and tls_keyfile: {exc}") from None
        return self

    @property
    def tls(self) -> bool:
        """True when the API serves HTTPS."""
        return self.tls_certfile is not None

    def metrics_bearer(self) -> str | None:
        """The metrics token (HAZARDWATCH_API__METRICS_TOKEN or its _FILE); None: only the
        admin token opens /metrics."""
        return self.metrics_token.get_secret_value() if self.metrics_token is not None else None


def _no_password() -> str:
    # An encrypted key would make OpenSSL ask on the terminal, which a service has not.
    raise ValueError("tls_keyfile is encrypted; give it unencrypted (mode 0600)")


class AuthSettings(BaseModel):
    """People logging in: passwords, sessions, lock-out; tokens for machines (docs/access.md)."""

    model_config = _SECTION
    password_min_length: int = Field(
        default=12, ge=8, le=128, description="shortest password accepted, characters"
    )
    idle_timeout_min: float = Field(
        default=30,
        ge=1,
        le=1440,
        description="a session unused this long ends, minutes (an open live stream counts as "
        "use when stream_keeps_session is true)",
    )
    absolute_timeout_h: float = Field(
        default=12,
        gt=0,
        le=168,
        description="a session ends this long after its login whatever its use, hours (a duty "
        "shift)",
    )
    stream_keeps_session: bool = Field(
        default=True,
        description="an open live stream keeps its session from the idle timeout (the duty "
        "desk's console shows alarms without being clicked)",
    )
    cookie_secure: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="the session cookie's Secure attribute: auto when the login came over "
        "HTTPS (X-Forwarded-Proto from a trusted proxy counts), always, or never",
    )
    trusted_proxies: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "::1"],
        description="addresses whose X-Forwarded-For and X-Forwarded-Proto are believed (the "
        "client's address for lock-out and the audit log; HTTPS for the cookie); * for any",
    )
    lockout_user_failures: int = Field(
        default=5, ge=1, le=1000, description="failed logins of one user name before a wait"
    )
    lockout_address_failures: int = Field(
        default=20, ge=1, le=100_000, description="failed logins from one address before a wait"
    )
    lockout_base_s: float = Field(
        default=60, ge=1, le=86400, description="the first wait, seconds; doubled each failure"
    )
    lockout_max_s: float = Field(
        default=3600, ge=1, le=7 * 86400, description="the longest wait, seconds"
    )
    lockout_forget_h: float = Field(
        default=24,
        gt=0,
        le=8760,
        description="failures of a user or address are forgotten after this long without one, "
        "hours (a login resets them at once)",
    )
    token_days: int = Field(
        default=365, ge=1, le=3650, description="a new API token expires after this many days"
    )

    @model_validator(mode="after")
    def _check_times(self) -> AuthSettings:
        if self.absolute_timeout_h * 60 < self.idle_timeout_min:
            raise ValueError("absolute_timeout_h must not be shorter than idle_timeout_min")
        if self.lockout_max_s < self.lockout_base_s:
            raise ValueError("lockout_max_s must not be shorter than lockout_base_s")
        return self


class DisplaySettings(BaseModel):
    """What people read: the console, notices and exports (times are stored in UTC and shown
    in `timezone`)."""

    model_config = _SECTION
    timezone: str = Field(
        default="Asia/Shanghai",
        min_length=1,
        description="IANA time zone in which people see times (console, notices, exports)",
    )
    language: Literal["zh-CN", "en"] = Field(
        default="zh-CN", description="language of the console, notices and exports by default"
    )
    console_url: str | None = Field(
        default=None,
        description="the console's address as people reach it (https://host[:port]), for "
        "links in notices; unset: http://api_host:api_port",
    )

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"not a known IANA time zone: {value!r}") from exc
        return value

    @field_validator("console_url")
    @classmethod
    def _check_console_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an http:// or https:// URL with a host")
            return value.rstrip("/")
        return value

    @property
    def zone(self) -> ZoneInfo:
        """The time zone itself."""
        return ZoneInfo(self.timezone)


class Settings(BaseSettings):
    """Configuration of one hazardwatch process (contract section 4)."""

    model_config = SettingsConfigDict(
        env_prefix="HAZARDWATCH_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
        frozen=True,
    )

    mqtt_url: str | None = Field(
        default=None, description="mqtt://user:pass@host:port or mqtts://…; unset: embedded broker"
    )
    influx_url: str | None = Field(
        default=None, description="InfluxDB base URL; unset: embedded time-series store"
    )
    influx_api: Literal["v1", "v2"] = Field(
        default="v2", description="v1: 1.x /write and /query; v2: 2.x/3.x /api/v2/write"
    )
    influx_db: str = Field(
        default="hazardwatch", min_length=1, description="database (v1) or bucket (v2)"
    )
    influx_org: str | None = Field(default=None, description="v2 organisation")
    influx_token: SecretStr | None = Field(
        default=None, description="v2 token; v1 takes user:password"
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; unset: SQLite file in the data dir"
    )
    data_dir: Path = Field(
        default=Path("./data"), description="local state: SQLite, spool, dead letters"
    )
    auto_register: bool = Field(
        default=True, description="add unknown devices on their first valid message"
    )
    api_host: str = Field(default="127.0.0.1", min_length=1, description="HTTP API address")
    api_port: int = Field(default=8080, ge=1, le=65535, description="HTTP API port")
    admin_token: SecretStr | None = Field(
        default=None, description="bootstrap admin bearer token; unset: generated at first start"
    )
    api: ApiSettings = Field(
        default_factory=ApiSettings,
        description="request limits, HTTPS, /metrics and the API docs ([api] in TOML, "
        "HAZARDWATCH_API__*)",
    )
    alerts: AlertSettings = Field(
        default_factory=AlertSettings,
        description="alert thresholds and notification ([alerts] in TOML, HAZARDWATCH_ALERTS__*)",
    )
    tickets: TicketSettings = Field(
        default_factory=TicketSettings,
        description="the hazard ledger ([tickets] in TOML, HAZARDWATCH_TICKETS__*)",
    )
    events: EventSettings = Field(
        default_factory=EventSettings,
        description="the event log ([events] in TOML, HAZARDWATCH_EVENTS__*)",
    )
    stream: StreamSettings = Field(
        default_factory=StreamSettings,
        description="live-stream limits ([stream] in TOML, HAZARDWATCH_STREAM__*)",
    )
    database: DatabaseSettings = Field(
        default_factory=DatabaseSettings,
        description="SQL timeouts ([database] in TOML, HAZARDWATCH_DATABASE__*)",
    )
    spool: SpoolSettings = Field(
        default_factory=SpoolSettings,
        description="ingest's spools on disk ([spool] in TOML, HAZARDWATCH_SPOOL__*)",
    )
    ingest: IngestSettings = Field(
        default_factory=IngestSettings,
        description="checks on device input ([ingest] in TOML, HAZARDWATCH_INGEST__*)",
    )
    auth: AuthSettings = Field(
        default_factory=AuthSettings,
        description="logins, sessions, lock-out and token expiry ([auth] in TOML, "
        "HAZARDWATCH_AUTH__*)",
    )
    deadletters: DeadLetterSettings = Field(
        default_factory=DeadLetterSettings,
        description="the dead-letter budget ([deadletters] in TOML, HAZARDWATCH_DEADLETTERS__*)",
    )
    display: DisplaySettings = Field(
        default_factory=DisplaySettings,
        description="time zone, language and console address for what people read "
        "([display] in TOML, HAZARDWATCH_DISPLAY__*)",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment (with `_FILE` variables); load_settings adds TOML."""
        return init_settings, EnvWithFilesSettingsSource(settings_cls)

    @field_validator("mqtt_url")
    @classmethod
    def _check_mqtt_url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_mqtt_url(value)
        return value

    @field_validator("influx_url")
    @classmethod
    def _check_influx_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an http:// or https:// URL with a host")
            return value.rstrip("/")
        return value

    @field_validator("admin_token")
    @classmethod
    def _check_admin_token(cls, value: SecretStr | None) -> SecretStr | None:
        # A guessable bootstrap token would open every endpoint under /api.
        if value is not None and len(value.get_secret_value()) < MIN_TOKEN_CHARS:
            raise ValueError(f"must be at least {MIN_TOKEN_CHARS} characters")
        return value

    @model_validator(mode="after")
    def _check_influx_credentials(self) -> Settings:
        if self.influx_url and self.influx_api == "v2" and self.influx_token is None:
            raise ValueError("HAZARDWATCH_INFLUX_TOKEN is required with HAZARDWATCH_INFLUX_API=v2")
        token = self.influx_token
        if self.influx_api == "v1" and token is not None and ":" not in token.get_secret_value():
            raise ValueError("with HAZARDWATCH_INFLUX_API=v1 the token is user:password")
        return self

    @property
    def mqtt(self) -> MqttEndpoint | None:
        """The configured broker, or None for the embedded one."""
        return parse_mqtt_url(self.mqtt_url) if self.mqtt_url else None

    @property
    def console_url(self) -> str:
        """Where people reach the console (for links in notices)."""
        if self.display.console_url:
            return self.display.console_url
        scheme = "https" if self.api.tls_certfile else "http"
        host = self.api_host if ":" not in self.api_host else f"[{self.api_host}]"
        return f"{scheme}://{host}:{self.api_port}"

    @property
    def sql_url(self) -> str:
        """The SQLAlchemy URL, defaulting to a SQLite file in the data dir."""
        return self.database_url or f"sqlite:///{self.data_dir / 'hazardwatch.sqlite'}"

    def redacted(self) -> dict[str, Any]:
        """Settings as a dict fit for logs: secrets and URL passwords hidden."""
        shown = self.model_dump(mode="json")
        for key in ("mqtt_url", "database_url", "influx_url"):
            if shown.get(key):
                shown[key] = _hide_password(shown[key])
        for hook in shown["alerts"]["webhooks"]:
            # Robot URLs carry their access token in the query (WeCom `key`, DingTalk
            # `access_token`).
            hook["url"] = hook["url"].split("?", 1)[0] + ("?***" if "?" in hook["url"] else "")
        return shown


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Read settings from the environment and an optional TOML file; the environment wins."""
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"configuration file not found: {config_file}")

    class _Settings(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            environment = EnvWithFilesSettingsSource(settings_cls)
            sources: list[PydanticBaseSettingsSource] = [init_settings, environment]
            if config_file is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
            return tuple(sources)

    try:
        loaded = _Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_explain(exc)) from None
    except ValueError as exc:  # a TOML syntax error
        raise ConfigError(f"cannot read {config_file}: {exc}") from None
    return Settings.model_validate(loaded.model_dump())


def _explain(exc: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for error in exc.errors():
        name = "__".join(str(p) for p in error["loc"]) or "settings"
        variable = f"HAZARDWATCH_{name.upper()}" if error["loc"] else name
        lines.append(f"  {variable}: {error['msg']}")
    return "\n".join(lines)
