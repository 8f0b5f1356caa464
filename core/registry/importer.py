"""Registry files: YAML (institutions and devices) or CSV (one of the two per file)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from core.errors import RegistryError
from core.registry.models import Device, Institution, RegistryFile

# CSV columns that hold nested values: `principal_name` → principal.name, and so on.
_NESTED = {
    "principal_name": ("principal", "name"),
    "principal_phone": ("principal", "phone"),
    "safety_manager_name": ("safety_manager", "name"),
    "safety_manager_phone": ("safety_manager", "phone"),
    "building": ("location", "building"),
    "floor": ("location", "floor"),
    "room": ("location", "room"),
}
THRESHOLD_PREFIX = "threshold."


def load_registry_file(path: Path) -> RegistryFile:
    """Read and validate a registry file; errors name the entry and the field."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            return _validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
        if suffix == ".csv":
            return _load_csv(path)
    except (OSError, yaml.YAMLError, UnicodeDecodeError, csv.Error) as exc:
        raise RegistryError(f"cannot read {path}: {exc}") from None
    raise RegistryError(f"{path}: unknown file type {suffix!r}; use .yaml, .yml or .csv")


def _validate(data: Any) -> RegistryFile:
    try:
        return RegistryFile.model_validate(data)
    except ValidationError as exc:
        raise RegistryError(_explain(exc, data)) from None


def _explain(exc: ValidationError, data: Any) -> str:
    lines = []
    for error in exc.errors(include_url=False)[:20]:
        loc = error["loc"]
        where = ".".join(str(p) for p in loc)
        if len(loc) >= 2 and isinstance(loc[1], int) and isinstance(data, dict):
            entry = (data.get(str(loc[0])) or [{}])[loc[1]]
            if isinstance(entry, dict) and "id" in entry:
                where = f"{loc[0]}[{loc[1]}] (id {entry['id']}): " + ".".join(map(str, loc[2:]))
        lines.append(f"  {where}: {error['msg']}")
    return "invalid registry file:\n" + "\n".join(lines)


def _load_csv(path: Path) -> RegistryFile:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return RegistryFile()
    entries = [_nest(row) for row in rows]
    section = "devices" if "institution" in rows[0] else "institutions"
    return _validate({section: entries})


def _nest(row: dict[str, str]) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    thresholds: dict[str, float | str] = {}
    for key, raw in row.items():
        value = (raw or "").strip()
        if key is None or value == "":
            continue
        if key.startswith(THRESHOLD_PREFIX):
            thresholds[key.removeprefix(THRESHOLD_PREFIX)] = value
        elif key in _NESTED:
            outer, inner = _NESTED[key]
            entry.setdefault(outer, {})[inner] = value
        elif key == "thresholds":
            try:
                entry["thresholds"] = json.loads(value)
            except ValueError as exc:
                raise RegistryError(f"id {row.get('id')}: thresholds is not JSON: {exc}") from None
        else:
            entry[key] = value
    if thresholds:
        entry["thresholds"] = thresholds
    return entry


def summary(registry: RegistryFile) -> str:
    """A one-line account of what a file holds."""
    return f"{len(registry.institutions)} institutions, {len(registry.devices)} devices"


__all__ = ["Device", "Institution", "RegistryFile", "load_registry_file", "summary"]
