"""Settings: exactly the variables of contract section 4, their defaults, sources and checks."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from core.errors import ConfigError
from core.settings import Settings, load_settings, parse_mqtt_url

# Contract section 4, variable by variable, without the HAZARDWATCH_ prefix.
CONTRACT_DEFAULTS: dict[str, object] = {
    "mqtt_url": None,
    "influx_url": None,
    "influx_api": "v2",
    "influx_db": "hazardwatch",
    "influx_org": None,
    "influx_token": None,
    "database_url": None,
    "data_dir": Path("./data"),
    "auto_register": True,
    "api_host": "127.0.0.1",
    "api_port": 8080,
    "admin_token": None,
}

ADMIN_TOKEN = "0123456789abcdef-admin"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No HAZARDWATCH_ variable of the machine running the tests leaks in."""
    for name in list(os.environ):
        if name.upper().startswith("HAZARDWATCH_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # a stray .env or config in the checkout cannot matter


def config_error(**overrides: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(**overrides)
    return str(caught.value)


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hazardwatch.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --- defaults and names -------------------------------------------------------------------------


# Added by the project (documented in docs/configuration.md), beside the contract's.
PROJECT_SECTIONS = {
    "api",
    "alerts",
    "tickets",
    "events",
    "stream",
    "spool",
    "database",
    "ingest",
    "deadletters",
    "auth",
    "display",
}


def test_the_fields_are_the_contract_variables_and_the_project_sections() -> None:
    assert set(Settings.model_fields) == set(CONTRACT_DEFAULTS) | PROJECT_SECTIONS


def test_alert_settings_come_from_nested_variables_and_toml(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HAZARDWATCH_ALERTS__SMOKE_DB_M", "0.3")
    config = write_toml(
        tmp_path,
        '[alerts]\nco_ppm = 80\n[[alerts.webhooks]]\nname = "duty"\n'
        'url = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=secret-key"\n'
        'format = "wecom"\n',
    )
    settings = load_settings(config)
    assert (settings.alerts.smoke_db_m, settings.alerts.co_ppm) == (0.3, 80)
    assert settings.alerts.webhooks[0].format == "wecom"
    shown = json.dumps(settings.redacted())
    assert "secret-key" not in shown and "qyapi.weixin.qq.com" in shown


def test_the_ingest_age_limit_comes_from_its_variable_and_toml(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert load_settings().ingest.max_past_days == 30
    config = write_toml(tmp_path, "[ingest]\nmax_past_days = 7\n")
    assert load_settings(config).ingest.max_past_days == 7
    monkeypatch.setenv("HAZARDWATCH_INGEST__MAX_PAST_DAYS", "2.5")
    assert load_settings(config).ingest.max_past_days == 2.5
    monkeypatch.setenv("HAZARDWATCH_INGEST__MAX_PAST_DAYS", "0")
    assert "HAZARDWATCH_INGEST__MAX_PAST_DAYS" in config_error()


def test_the_dead_letter_budget_comes_from_its_variables_and_toml(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    defaults = load_settings().deadletters
    assert (defaults.keep_days, defaults.max_mib) == (30, 512)
    config = write_toml(tmp_path, "[deadletters]\nkeep_days = 7\nmax_mib = 64\n")
    monkeypatch.setenv("HAZARDWATCH_DEADLETTERS__MAX_MIB", "128")
    budget = load_settings(config).deadletters
    assert (budget.keep_days, budget.max_mib) == (7, 128)
    monkeypatch.setenv("HAZARDWATCH_DEADLETTERS__KEEP_DAYS", "-1")
    assert "HAZARDWATCH_DEADLETTERS__KEEP_DAYS" in config_error()


def test_the_body_limit_comes_from_its_variable_and_toml(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert load_settings().api.max_body_kib == 64
    config = write_toml(tmp_path, "api_port = 9000\n[api]\nmax_body_kib = 256\n")
    settings = load_settings(config)
    assert (settings.api.max_body_kib, settings.api_port) == (256, 9000)
    monkeypatch.setenv("HAZARDWATCH_API__MAX_BODY_KIB", "16")
    monkeypatch.setenv("HAZARDWATCH_API_PORT", "9001")
    settings = load_settings(config)
    assert (settings.api.max_body_kib, settings.api_port) == (16, 9001)
    monkeypatch.setenv("HAZARDWATCH_API__MAX_BODY_KIB", "0")
    assert "HAZARDWATCH_API__MAX_BODY_KIB" in config_error()


def test_the_attachment_quota_comes_from_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().tickets.attachment_quota_mb == 2048
    monkeypatch.setenv("HAZARDWATCH_TICKETS__ATTACHMENT_QUOTA_MB", "100")
    assert load_settings().tickets.attachment_quota_mb == 100
    monkeypatch.setenv("HAZARDWATCH_TICKETS__ATTACHMENT_QUOTA_MB", "0")
    assert "HAZARDWATCH_TICKETS__ATTACHMENT_QUOTA_MB" in config_error()


def test_the_auth_settings_come_from_their_variables_and_toml(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    auth = load_settings().auth
    assert (auth.idle_timeout_min, auth.absolute_timeout_h, auth.password_min_length) == (
        30,
        12,
        12,
    )
    assert (auth.lockout_user_failures, auth.lockout_base_s, auth.lockout_max_s) == (5, 60, 3600)
    assert (auth.cookie_secure, auth.token_days) == ("auto", 365)
    config = write_toml(tmp_path, "[auth]\nidle_timeout_min = 15\nabsolute_timeout_h = 8\n")
    assert (
        load_settings(config).auth.idle_timeout_min,
        load_settings(config).auth.absolute_timeout_h,
    ) == (15, 8)
    monkeypatch.setenv("HAZARDWATCH_AUTH__IDLE_TIMEOUT_MIN", "45")
    monkeypatch.setenv("HAZARDWATCH_AUTH__TRUSTED_PROXIES", '["10.0.0.2"]')
    settings = load_settings(config)
    assert (settings.auth.idle_timeout_min, settings.auth.absolute_timeout_h) == (45, 8)
    assert settings.auth.trusted_proxies == ["10.0.0.2"]
    monkeypatch.setenv("HAZARDWATCH_AUTH__IDLE_TIMEOUT_MIN", "800")  # longer than 12 h
    assert "absolute_timeout_h must not be shorter than idle_timeout_min" in config_error()
    monkeypatch.delenv("HAZARDWATCH_AUTH__IDLE_TIMEOUT_MIN")
    monkeypatch.setenv("HAZARDWATCH_AUTH__PASSWORD_MIN_LENGTH", "6")
    assert "HAZARDWATCH_AUTH__PASSWORD_MIN_LENGTH" in config_error()
    monkeypatch.setenv("HAZARDWATCH_AUTH__PASSWORD_MIN_LENGTH", "16")
    monkeypatch.setenv("HAZARDWATCH_AUTH__LOCKOUT_MAX_S", "30")
    assert "lockout_max_s must not be shorter than lockout_base_s" in config_error()


def test_bad_alert_settings_name_the_variable() -> None:
    message = config_error(alerts={"gas_major_lel_pct": 60, "gas_critical_lel_pct": 50})
    assert "HAZARDWATCH_ALERTS" in message and "gas_critical_lel_pct must be above" in message


def test_the_defaults_are_the_contract_defaults() -> None:
    settings = load_settings()
    for name, default in CONTRACT_DEFAULTS.items():
        assert getattr(settings, name) == default, name
    assert settings.mqtt is None  # unset: the embedded broker


def test_every_field_is_described() -> None:
    assert all(field.description for field in Settings.model_fields.values())


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.api_port = 9000  # type: ignore[misc]


def test_the_sql_url_defaults_to_a_sqlite_file_in_the_data_dir(tmp_path: Path) -> None:
    default = make_url(load_settings().sql_url)
    assert default.drivername == "sqlite"
    assert Path(default.database or "") == Path("data") / "hazardwatch.sqlite"

    elsewhere = tmp_path / "state dir"
    url = make_url(load_settings(data_dir=elsewhere).sql_url)
    assert url.drivername == "sqlite"
    assert Path(url.database or "") == elsewhere / "hazardwatch.sqlite"


def test_an_explicit_database_url_wins_over_the_data_dir() -> None:
    settings = load_settings(database_url="postgresql+psycopg://hw@db/hazardwatch")
    assert settings.sql_url == "postgresql+psycopg://hw@db/hazardwatch"


# --- sources ------------------------------------------------------------------------------------


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    values = {
        "MQTT_URL": "mqtts://hw:secret@broker.example:8884",
        "INFLUX_URL": "https://influx.example:8086/",
        "INFLUX_API": "v1",
        "INFLUX_DB": "fire",
        "INFLUX_ORG": "civil-affairs",
        "INFLUX_TOKEN": "writer:pass",
        "DATABASE_URL": "postgresql+psycopg://hw@db/hazardwatch",
        "DATA_DIR": str(tmp_path / "state"),
        "AUTO_REGISTER": "false",
        "API_HOST": "0.0.0.0",
        "API_PORT": "9090",
        "ADMIN_TOKEN": ADMIN_TOKEN,
    }
    assert {name.lower() for name in values} == set(CONTRACT_DEFAULTS)
    for name, value in values.items():
        monkeypatch.setenv(f"HAZARDWATCH_{name}", value)
    settings = load_settings()
    assert settings.mqtt_url == "mqtts://hw:secret@broker.example:8884"
    assert settings.influx_url == "https://influx.example:8086"  # trailing slash dropped
    assert settings.influx_api == "v1"
    assert settings.influx_db == "fire"
    assert settings.influx_org == "civil-affairs"
    assert settings.influx_token is not None
    assert settings.influx_token.get_secret_value() == "writer:pass"
    assert settings.database_url == "postgresql+psycopg://hw@db/hazardwatch"
    assert settings.data_dir == tmp_path / "state"
    assert settings.auto_register is False
    assert settings.api_host == "0.0.0.0"
    assert settings.api_port == 9090
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == ADMIN_TOKEN


def test_a_toml_file_is_read(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        'influx_db = "x"\n'
        "api_port = 9001\n"
        "auto_register = false\n"
        'mqtt_url = "mqtt://broker:1884"\n'
        f'data_dir = "{(tmp_path / "d").as_posix()}"\n',
    )
    settings = load_settings(path)
    assert settings.influx_db == "x"
    assert settings.api_port == 9001
    assert settings.auto_register is False
    assert settings.mqtt_url == "mqtt://broker:1884"
    assert settings.data_dir == tmp_path / "d"
    assert settings.api_host == "127.0.0.1"  # what the file does not set keeps its default


def test_the_environment_wins_over_the_toml_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write_toml(tmp_path, 'influx_db = "from-file"\napi_port = 9001\n')
    monkeypatch.setenv("HAZARDWATCH_INFLUX_DB", "from-env")
    settings = load_settings(path)
    assert settings.influx_db == "from-env"
    assert settings.api_port == 9001


def test_explicit_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAZARDWATCH_API_PORT", "9002")
    assert load_settings().api_port == 9002
    assert load_settings(api_port=9003).api_port == 9003


def test_a_bad_value_in_the_environment_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAZARDWATCH_API_PORT", "eighty")
    with pytest.raises(ConfigError, match="HAZARDWATCH_API_PORT"):
        load_settings()


def test_a_bad_value_in_the_toml_file_names_its_variable(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'influx_api = "v9"\n')
    with pytest.raises(ConfigError, match="HAZARDWATCH_INFLUX_API"):
        load_settings(path)


def test_an_unknown_key_in_the_toml_file_is_refused(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'influx_db = "x"\ninflux_bucket = "typo"\n')
    with pytest.raises(ConfigError, match="INFLUX_BUCKET"):
        load_settings(path)


def test_a_missing_config_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="not found") as caught:
        load_settings(missing)
    assert str(missing) in str(caught.value)


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path)


def test_bad_toml_syntax_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'influx_db = "unterminated\n')
    with pytest.raises(ConfigError, match="cannot read") as caught:
        load_settings(path)
    assert str(path) in str(caught.value)


# --- checks -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"mqtt_url": "http://broker:1883"}, "HAZARDWATCH_MQTT_URL"),
        ({"mqtt_url": "broker:1883"}, "HAZARDWATCH_MQTT_URL"),
        ({"mqtt_url": "mqtt://"}, "HAZARDWATCH_MQTT_URL"),
        ({"mqtt_url": "mqtt://broker:99999"}, "HAZARDWATCH_MQTT_URL"),
        ({"mqtt_url": "mqtt://broker:port"}, "HAZARDWATCH_MQTT_URL"),
        ({"api_port": 0}, "HAZARDWATCH_API_PORT"),
        ({"api_port": 65536}, "HAZARDWATCH_API_PORT"),
        ({"api_host": ""}, "HAZARDWATCH_API_HOST"),
        ({"influx_api": "v3"}, "HAZARDWATCH_INFLUX_API"),
        ({"influx_db": ""}, "HAZARDWATCH_INFLUX_DB"),
        ({"influx_url": "influx:8086"}, "HAZARDWATCH_INFLUX_URL"),
        ({"influx_url": "ftp://influx"}, "HAZARDWATCH_INFLUX_URL"),
        ({"admin_token": "short"}, "HAZARDWATCH_ADMIN_TOKEN"),
        ({"admin_token": "x" * 15}, "HAZARDWATCH_ADMIN_TOKEN"),
        ({"auto_register": "perhaps"}, "HAZARDWATCH_AUTO_REGISTER"),
    ],
)
def test_bad_values_are_config_errors_naming_the_variable(
    overrides: dict[str, object], variable: str
) -> None:
    assert variable in config_error(**overrides)


def test_v2_with_a_url_needs_a_token() -> None:
    message = config_error(influx_url="http://influx:8086", influx_api="v2")
    assert "HAZARDWATCH_INFLUX_TOKEN" in message
    token = "t" * 20
    assert load_settings(influx_url="http://influx:8086", influx_token=token).influx_token


def test_v1_takes_user_colon_password_as_token() -> None:
    message = config_error(influx_url="http://influx:8086", influx_api="v1", influx_token="abc")
    assert "HAZARDWATCH_INFLUX_API=v1" in message
    assert "user:password" in message
    settings = load_settings(influx_url="http://influx:8086", influx_api="v1", influx_token="u:p")
    assert settings.influx_api == "v1"


def test_v1_without_a_token_is_fine() -> None:
    # InfluxDB 1.x runs without authentication by default.
    assert load_settings(influx_url="http://influx:8086", influx_api="v1").influx_token is None


def test_an_admin_token_of_16_characters_is_enough() -> None:
    settings = load_settings(admin_token="x" * 16)
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == "x" * 16


def test_several_bad_values_are_all_reported() -> None:
    message = config_error(api_port=0, influx_api="v3")
    assert "HAZARDWATCH_API_PORT" in message
    assert "HAZARDWATCH_INFLUX_API" in message


# --- redaction ----------------------------------------------------------------------------------


def test_redacted_hides_passwords_and_secrets() -> None:
    settings = load_settings(
        mqtt_url="mqtts://hw:mqtt%40pass@broker:8883",
        influx_url="https://reader:influxpass@influx:8086",
        influx_token="tokentokentoken",
        database_url="postgresql+psycopg://hw:dbpass@db:5432/hazardwatch",
        admin_token=ADMIN_TOKEN,
    )
    shown = settings.redacted()
    text = json.dumps(shown)
    for secret in ("mqtt%40pass", "mqtt@pass", "influxpass", "tokentokentoken", "dbpass"):
        assert secret not in text
    assert ADMIN_TOKEN not in text
    assert shown["mqtt_url"] == "mqtts://hw:***@broker:8883"
    assert shown["influx_url"] == "https://reader:***@influx:8086"
    assert shown["database_url"] == "postgresql+psycopg://hw:***@db:5432/hazardwatch"
    assert shown["influx_token"] != "tokentokentoken" and shown["influx_token"]
    assert shown["api_port"] == 8080  # the rest is shown as it is
    assert set(shown) == set(CONTRACT_DEFAULTS) | PROJECT_SECTIONS


def test_redacted_leaves_urls_without_a_password_alone() -> None:
    shown = load_settings(mqtt_url="mqtt://hw@broker:1883").redacted()
    assert shown["mqtt_url"] == "mqtt://hw@broker:1883"
    assert shown["database_url"] is None


def test_redacted_is_json_serialisable() -> None:
    shown = load_settings(admin_token=ADMIN_TOKEN).redacted()
    assert json.loads(json.dumps(shown))["data_dir"] == "data"


# --- MQTT URLs ----------------------------------------------------------------------------------


def test_parse_mqtt_url_with_everything() -> None:
    endpoint = parse_mqtt_url("mqtt://hazard:s3cret@broker.example:1884")
    assert (endpoint.host, endpoint.port, endpoint.tls) == ("broker.example", 1884, False)
    assert endpoint.username == "hazard"
    assert endpoint.password is not None
    assert endpoint.password.get_secret_value() == "s3cret"


def test_parse_mqtt_url_default_ports() -> None:
    plain = parse_mqtt_url("mqtt://broker")
    assert (plain.port, plain.tls, plain.username, plain.password) == (1883, False, None, None)
    secure = parse_mqtt_url("mqtts://broker")
    assert (secure.port, secure.tls) == (8883, True)
    assert parse_mqtt_url("mqtts://broker:443").port == 443


def test_parse_mqtt_url_decodes_percent_encoded_credentials() -> None:
    endpoint = parse_mqtt_url("mqtts://user%40site:p%40ss%3Aw%2Fo%20rd%25@broker:8884")
    assert endpoint.username == "user@site"
    assert endpoint.password is not None
    assert endpoint.password.get_secret_value() == "p@ss:w/o rd%"
    assert endpoint.tls is True


def test_parse_mqtt_url_user_without_password_and_empty_password() -> None:
    assert parse_mqtt_url("mqtt://user@broker").password is None
    empty = parse_mqtt_url("mqtt://user:@broker").password
    assert empty is not None and empty.get_secret_value() == ""


def test_parse_mqtt_url_ipv6_host() -> None:
    endpoint = parse_mqtt_url("mqtt://[::1]:1884")
    assert (endpoint.host, endpoint.port) == ("::1", 1884)


@pytest.mark.parametrize(
    "url", ["http://broker", "tcp://broker:1883", "broker:1883", "mqtt://", "mqtt://broker:x"]
)
def test_parse_mqtt_url_refuses_what_is_not_one(url: str) -> None:
    with pytest.raises(ValueError, match=r"scheme|host|port"):
        parse_mqtt_url(url)


def test_the_mqtt_property_parses_the_configured_url() -> None:
    endpoint = load_settings(mqtt_url="mqtts://u:p@broker").mqtt
    assert endpoint is not None
    assert (endpoint.host, endpoint.port, endpoint.tls, endpoint.username) == (
        "broker",
        8883,
        True,
        "u",
    )


# --- secrets from files --------------------------------------------------------------------


def test_any_setting_can_come_from_a_file_named_by_its_FILE_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token = tmp_path / "admin_token"
    token.write_text("from-a-file-0123456789\n", encoding="utf-8")  # as `echo` writes it
    influx = tmp_path / "influx_token"
    influx.write_text("reader:pa ss\r\n", encoding="utf-8")
    webhook = tmp_path / "escalation"
    webhook.write_text("7", encoding="utf-8")
    monkeypatch.setenv("HAZARDWATCH_ADMIN_TOKEN_FILE", str(token))
    monkeypatch.setenv("HAZARDWATCH_INFLUX_API", "v1")
    monkeypatch.setenv("HAZARDWATCH_INFLUX_TOKEN_FILE", str(influx))
    monkeypatch.setenv("HAZARDWATCH_ALERTS__ESCALATION_INTERVAL_S_FILE", str(webhook))
    settings = load_settings()
    assert settings.admin_token is not None and settings.influx_token is not None
    assert settings.admin_token.get_secret_value() == "from-a-file-0123456789"
    assert settings.influx_token.get_secret_value() == "reader:pa ss", "only the line end goes"
    assert settings.alerts.escalation_interval_s == 7, "nested sections too"


@pytest.mark.parametrize(
    ("direct", "path", "message"),
    [
        ("also-set-0123456789", None, "HAZARDWATCH_ADMIN_TOKEN and HAZARDWATCH_ADMIN_TOKEN_FILE"),
        (None, "missing", "HAZARDWATCH_ADMIN_TOKEN_FILE: cannot read"),
    ],
)
def test_a_secret_file_that_cannot_be_used_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    direct: str | None,
    path: str | None,
    message: str,
) -> None:
    secret = tmp_path / "token"
    secret.write_text("the-secret-in-the-file-0123", encoding="utf-8")
    monkeypatch.setenv(
        "HAZARDWATCH_ADMIN_TOKEN_FILE", str(tmp_path / path) if path else str(secret)
    )
    if direct is not None:
        monkeypatch.setenv("HAZARDWATCH_ADMIN_TOKEN", direct)
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings()
    assert "the-secret-in-the-file" not in str(caught.value), "never the secret itself"
    assert "also-set" not in str(caught.value)
