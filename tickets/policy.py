"""The ticket policy: which alerts become hazard tickets, for whom, by when.

A YAML file (the shipped defaults are `tickets/policy.yaml`) with three parts:

- `rules`, by alert kind: category, severity, major hazard or not, delay before the ticket
  opens, deadline, on-site verification, what happens when the condition clears before anyone
  has worked on the ticket, and an optional route;
- `routes`: responsible units other than the institution itself (e.g. the maintenance
  contractor for device faults);
- `escalation`: how far past its deadline an open ticket moves up each level;
- `reported`: bounds for tickets people report (the deadline they may set, how far back a
  hazard may be dated).

Durations are written `90s`, `30m`, `72h`, `7d` (or a number of seconds).
"""

from __future__ import annotations

import re
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from core.alerting import AlertKind, Severity
from core.errors import ConfigError
from tickets.models import MAX_ESCALATION_LEVEL

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(value: Any) -> Any:
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"a duration like 30m, 72h or 7d, got {value!r}")
        return timedelta(seconds=float(match[1]) * _UNIT_S[match[2]])
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]
_STRICT = ConfigDict(extra="forbid", frozen=True)


class Route(BaseModel):
    """A responsible unit and person other than the institution's own."""

    model_config = _STRICT
    unit: str = Field(min_length=1, max_length=200, description="整改责任单位")
    person: str = Field(min_length=1, max_length=100, description="责任人")
    phone: str | None = Field(default=None, max_length=40)


class Rule(BaseModel):
    """What one alert kind becomes in the ledger."""

    model_config = _STRICT
    category: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$", description="ticket category")
    title_zh: str = Field(min_length=1, max_length=200, description="隐患描述 in Chinese")
    title_en: str = Field(min_length=1, max_length=200, description="hazard title in English")
    severity: Severity
    major_hazard: bool = Field(default=False, description="重大事故隐患")
    delay: Duration = Field(
        default=timedelta(0), description="the alert must still be open after this"
    )
    deadline: Duration = Field(description="from opening to the rectification deadline")
    verification: bool = Field(default=True, description="on-site verification before close")
    when_cleared: Literal["close", "verify", "keep"] = Field(
        default="verify",
        description="the condition clears before anyone worked on the ticket: close it "
        "(sensor evidence suffices), put it up for verification, or keep it as it is",
    )
    route: str | None = Field(default=None, description="a key of `routes`; none: institution")


class Step(BaseModel):
    """One escalation level: reached this long after the deadline."""

    model_config = _STRICT
    after: Duration
    level: int = Field(ge=1, le=MAX_ESCALATION_LEVEL)


class Reported(BaseModel):
    """Bounds for a ticket a person reports: a tenant must not set its own hazard a deadline
    years ahead, or date it back into a month already reported."""

    model_config = _STRICT
    longest_deadline: Duration = Field(
        default=timedelta(days=180), description="the deadline at most this long after now"
    )
    oldest_found: Duration = Field(
        default=timedelta(days=31), description="found at most this long before it is reported"
    )
    clock_skew: Duration = Field(
        default=timedelta(minutes=5), description="a time this far ahead still counts as now"
    )


class Policy(BaseModel):
    """The whole policy file."""

    model_config = _STRICT
    rules: dict[AlertKind, Rule] = Field(default_factory=dict)
    routes: dict[str, Route] = Field(default_factory=dict)
    escalation: list[Step] = Field(default_factory=list)
    reported: Reported = Field(default_factory=Reported)

    @model_validator(mode="after")
    def _check(self) -> Policy:
        for kind, rule in self.rules.items():
            if rule.route is not None and rule.route not in self.routes:
                raise ValueError(f"rules.{kind}: route {rule.route!r} is not in routes")
            if rule.major_hazard and not rule.verification:
                raise ValueError(f"rules.{kind}: a major hazard is always verified on site")
        levels = [step.level for step in self.escalation]
        if levels != sorted(set(levels)):
            raise ValueError("escalation: levels must go up one step at a time, each once")
        afters = [step.after for step in self.escalation]
        if afters != sorted(afters):
            raise ValueError("escalation: each level must come after the one before")
        return self

    def rule(self, kind: AlertKind) -> Rule | None:
        """The rule for an alert kind; None: no ticket."""
        return self.rules.get(kind)

    def level_at(self, overdue: timedelta) -> int:
        """The escalation level of a ticket this long past its deadline (0: not yet)."""
        level = 0
        for step in self.escalation:
            if overdue >= step.after:
                level = step.level
        return level


def load_policy(path: Path | None = None) -> Policy:
    """Read a policy file; without one, the shipped defaults."""
    try:
        if path is None:
            text = resources.files("tickets").joinpath("policy.yaml").read_text("utf-8")
            where = "tickets/policy.yaml"
        else:
            text = path.read_text("utf-8")
            where = str(path)
    except OSError as exc:
        raise ConfigError(f"cannot read the ticket policy {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
        return Policy.model_validate(data)
    except yaml.YAMLError as exc:
        raise ConfigError(f"ticket policy {where}: not YAML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise ConfigError(f"ticket policy {where}: {problems}") from None
