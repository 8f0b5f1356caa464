"""The registry: import files, SQL storage, and the in-memory directory of the receive path."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine, session_factory, upgrade
from core.errors import RegistryError
from core.health import Component, State
from core.models import DeviceKind
from core.registry.directory import AUTO_REGISTER_BATCH, DeviceDirectory, DeviceInfo
from core.registry.importer import load_registry_file, summary
from core.registry.models import Device, Institution, InstitutionType, Location, Person
from core.registry.repository import RegistryRepository

YAML = """\
institutions:
  - id: inst-1
    name: 阳光养老院
    type: elderly_care
    town: 城关镇
    address: 人民路 1 号
    lat: 30.59
    lon: 114.31
    principal: {name: 张三, phone: "13800000001"}
    safety_manager: {name: 李四, phone: "13800000002"}
  - id: inst-2
    name: 儿童福利院
    type: child_welfare
devices:
  - id: gas-101
    institution: inst-1
    kind: gas
    model: JT-GX100
    location: {building: 主楼, floor: "1", room: 厨房}
    zone: 一层
    heartbeat_s: 120
    thresholds: {gas_lel_pct: 20}
  - id: smoke-201
    institution: inst-1
    kind: smoke
"""

INSTITUTIONS_CSV = """\
id,name,type,town,address,lat,lon,principal_name,principal_phone,safety_manager_name,safety_manager_phone
inst-3,敬老院,elderly_care,东城街道,东路 2 号,30.1,114.2,王五,13700000003,赵六,13600000004
inst-4,救助站,rescue_station,,,,,,,,
"""

DEVICES_CSV = """\
id,institution,kind,model,building,floor,room,zone,heartbeat_s,threshold.gas_lel_pct
smoke-301,inst-3,smoke,SD-1,A栋,3,301,三层,300,
gas-302,inst-3,gas,GX-1,A栋,3,厨房,三层,60,15.5
"""


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    upgrade(url)
    engine = make_engine(url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def repository(sessions: sessionmaker[Session]) -> RegistryRepository:
    return RegistryRepository(sessions)


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding=encoding)
    return path


def registry_error(path: Path) -> str:
    with pytest.raises(RegistryError) as caught:
        load_registry_file(path)
    return str(caught.value)


# --- files --------------------------------------------------------------------------------------


def test_a_yaml_file_with_chinese_names(tmp_path: Path) -> None:
    registry = load_registry_file(write(tmp_path, "registry.yaml", YAML))
    assert summary(registry) == "2 institutions, 2 devices"
    home = registry.institutions[0]
    assert home == Institution(
        id="inst-1",
        name="阳光养老院",
        type=InstitutionType.ELDERLY_CARE,
        town="城关镇",
        address="人民路 1 号",
        lat=30.59,
        lon=114.31,
        principal=Person(name="张三", phone="13800000001"),
        safety_manager=Person(name="李四", phone="13800000002"),
    )
    assert registry.institutions[1].type is InstitutionType.CHILD_WELFARE
    gas = registry.devices[0]
    assert gas == Device(
        id="gas-101",
        institution="inst-1",
        kind=DeviceKind.GAS,
        model="JT-GX100",
        location=Location(building="主楼", floor="1", room="厨房"),
        zone="一层",
        heartbeat_s=120,
        thresholds={"gas_lel_pct": 20.0},
    )
    smoke = registry.devices[1]
    assert (smoke.kind, smoke.heartbeat_s, smoke.thresholds) == (DeviceKind.SMOKE, 300, {})
    assert smoke.auto_registered is False


def test_the_yml_suffix_and_an_empty_file(tmp_path: Path) -> None:
    assert (
        summary(load_registry_file(write(tmp_path, "r.YML", YAML))) == "2 institutions, 2 devices"
    )
    assert (
        summary(load_registry_file(write(tmp_path, "empty.yaml", "")))
        == "0 institutions, 0 devices"
    )


def test_a_csv_file_of_institutions(tmp_path: Path) -> None:
    registry = load_registry_file(write(tmp_path, "institutions.csv", INSTITUTIONS_CSV))
    assert registry.devices == []
    first, second = registry.institutions
    assert first.id == "inst-3"
    assert first.name == "敬老院"
    assert (first.town, first.address, first.lat, first.lon) == (
        "东城街道",
        "东路 2 号",
        30.1,
        114.2,
    )
    assert first.principal == Person(name="王五", phone="13700000003")
    assert first.safety_manager == Person(name="赵六", phone="13600000004")
    # Empty cells are absent values.
    assert second.type is InstitutionType.RESCUE_STATION
    assert (second.town, second.lat, second.principal) == (None, None, None)


def test_a_csv_file_of_devices(tmp_path: Path) -> None:
    registry = load_registry_file(write(tmp_path, "devices.csv", DEVICES_CSV))
    assert registry.institutions == []
    smoke, gas = registry.devices
    assert smoke.location == Location(building="A栋", floor="3", room="301")
    assert (smoke.kind, smoke.zone, smoke.heartbeat_s) == (DeviceKind.SMOKE, "三层", 300)
    assert smoke.thresholds == {}  # an empty threshold cell sets none
    assert (gas.kind, gas.heartbeat_s, gas.thresholds) == (
        DeviceKind.GAS,
        60,
        {"gas_lel_pct": 15.5},
    )


def test_a_csv_file_saved_by_excel_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = write(tmp_path, "devices.csv", DEVICES_CSV, encoding="utf-8-sig")
    assert [d.id for d in load_registry_file(path).devices] == ["smoke-301", "gas-302"]


def test_a_csv_file_with_a_json_thresholds_column(tmp_path: Path) -> None:
    text = 'id,institution,kind,thresholds\ngas-1,inst-1,gas,"{""gas_lel_pct"": 25}"\n'
    device = load_registry_file(write(tmp_path, "devices.csv", text)).devices[0]
    assert device.thresholds == {"gas_lel_pct": 25.0}


def test_a_csv_file_with_only_a_header(tmp_path: Path) -> None:
    registry = load_registry_file(write(tmp_path, "devices.csv", "id,institution,kind\n"))
    assert (registry.institutions, registry.devices) == ([], [])


# --- file errors --------------------------------------------------------------------------------


def test_a_bad_kind_names_the_entry(tmp_path: Path) -> None:
    message = registry_error(write(tmp_path, "r.yaml", YAML.replace("kind: smoke", "kind: laser")))
    assert "smoke-201" in message
    assert "kind" in message


def test_a_bad_id_names_the_entry(tmp_path: Path) -> None:
    message = registry_error(write(tmp_path, "r.yaml", YAML.replace("id: inst-2", "id: inst 2!")))
    assert "inst 2!" in message
    assert "institutions[1]" in message


def test_a_bad_institution_reference_id_is_refused(tmp_path: Path) -> None:
    text = "devices:\n  - {id: d-1, institution: 养老院, kind: gas}\n"
    message = registry_error(write(tmp_path, "r.yaml", text))
    assert "d-1" in message and "institution" in message


def test_an_unknown_csv_column_names_the_entry(tmp_path: Path) -> None:
    text = "id,institution,kind,colour\ngas-9,inst-1,gas,red\n"
    message = registry_error(write(tmp_path, "devices.csv", text))
    assert "gas-9" in message
    assert "colour" in message


def test_an_unknown_yaml_key_is_refused(tmp_path: Path) -> None:
    text = YAML.replace("zone: 一层", "zone: 一层\n    wing: east")
    message = registry_error(write(tmp_path, "r.yaml", text))
    assert "gas-101" in message and "wing" in message


def test_an_unknown_top_level_section_is_refused(tmp_path: Path) -> None:
    assert "sensors" in registry_error(write(tmp_path, "r.yaml", "sensors: []\n"))


def test_a_bad_value_in_a_csv_names_the_entry(tmp_path: Path) -> None:
    text = INSTITUTIONS_CSV.replace("30.1,114.2", "95,114.2")  # latitude out of range
    message = registry_error(write(tmp_path, "institutions.csv", text))
    assert "inst-3" in message and "lat" in message


def test_bad_json_thresholds_in_a_csv_name_the_entry(tmp_path: Path) -> None:
    text = "id,institution,kind,thresholds\ngas-1,inst-1,gas,{not json\n"
    message = registry_error(write(tmp_path, "devices.csv", text))
    assert "gas-1" in message and "thresholds" in message


def test_a_csv_file_that_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "institutions.csv", INSTITUTIONS_CSV, encoding="gbk")
    assert "cannot read" in registry_error(path)


def test_bad_yaml_syntax_is_an_error(tmp_path: Path) -> None:
    assert "cannot read" in registry_error(write(tmp_path, "r.yaml", "institutions: [\n"))


def test_a_yaml_file_that_is_not_a_mapping_is_an_error(tmp_path: Path) -> None:
    assert "invalid registry file" in registry_error(write(tmp_path, "r.yaml", "- a\n- b\n"))


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    assert "cannot read" in registry_error(tmp_path / "missing.yaml")


def test_an_unknown_file_type_is_an_error(tmp_path: Path) -> None:
    assert "unknown file type" in registry_error(write(tmp_path, "registry.json", "{}"))


# --- the repository -----------------------------------------------------------------------------


def test_an_import_is_stored_and_read_back(tmp_path: Path, repository: RegistryRepository) -> None:
    registry = load_registry_file(write(tmp_path, "r.yaml", YAML))
    assert repository.upsert_institutions(registry.institutions) == 2
    assert repository.upsert_devices(registry.devices) == 2
    assert repository.institutions() == registry.institutions
    assert repository.devices() == sorted(registry.devices, key=lambda d: d.id)
    assert repository.institution("inst-1") == registry.institutions[0]
    assert repository.device("gas-101") == registry.devices[0]
    assert repository.device("nope") is None
    assert repository.institution("nope") is None
    assert repository.ping() is True


def test_csv_imports_are_stored(tmp_path: Path, repository: RegistryRepository) -> None:
    institutions = load_registry_file(write(tmp_path, "i.csv", INSTITUTIONS_CSV)).institutions
    devices = load_registry_file(write(tmp_path, "d.csv", DEVICES_CSV)).devices
    repository.upsert_institutions(institutions)
    repository.upsert_devices(devices)
    assert [i.id for i in repository.institutions()] == ["inst-3", "inst-4"]
    stored = repository.device("gas-302")
    assert stored is not None
    assert stored.thresholds == {"gas_lel_pct": 15.5}
    assert stored.location.room == "厨房"


def test_upserting_twice_updates_instead_of_duplicating(
    tmp_path: Path, repository: RegistryRepository
) -> None:
    registry = load_registry_file(write(tmp_path, "r.yaml", YAML))
    repository.upsert_institutions(registry.institutions)
    repository.upsert_devices(registry.devices)

    changed = YAML.replace("阳光养老院", "阳光颐养中心").replace(
        "heartbeat_s: 120", "heartbeat_s: 90"
    )
    changed = changed.replace('safety_manager: {name: 李四, phone: "13800000002"}', "")
    again = load_registry_file(write(tmp_path, "r2.yaml", changed))
    repository.upsert_institutions(again.institutions)
    repository.upsert_devices(again.devices)

    assert len(repository.institutions()) == 2
    assert len(repository.devices()) == 2
    home = repository.institution("inst-1")
    assert home is not None
    assert home.name == "阳光颐养中心"
    assert home.safety_manager is None  # a field removed from the file is cleared
    gas = repository.device("gas-101")
    assert gas is not None and gas.heartbeat_s == 90


def test_a_device_of_an_unknown_institution_is_refused_and_nothing_is_stored(
    tmp_path: Path, repository: RegistryRepository
) -> None:
    devices = load_registry_file(write(tmp_path, "d.csv", DEVICES_CSV)).devices
    with pytest.raises(RegistryError, match="smoke-301") as caught:
        repository.upsert_devices(devices)
    assert "inst-3" in str(caught.value)
    assert repository.devices() == []


def test_auto_registered_devices_get_a_placeholder_institution(
    repository: RegistryRepository,
) -> None:
    repository.add_auto_registered(
        [
            Device(id="d-1", institution="new-inst", kind=DeviceKind.CO, auto_registered=True),
            Device(id="d-2", institution="new-inst", kind=DeviceKind.GAS, auto_registered=True),
        ]
    )
    placeholder = repository.institution("new-inst")
    assert placeholder is not None
    assert (placeholder.name, placeholder.type) == ("new-inst", InstitutionType.OTHER)
    assert [d.id for d in repository.devices()] == ["d-1", "d-2"]


def test_auto_registration_never_overwrites_the_registry(
    tmp_path: Path, repository: RegistryRepository
) -> None:
    registry = load_registry_file(write(tmp_path, "r.yaml", YAML))
    repository.upsert_institutions(registry.institutions)
    repository.upsert_devices(registry.devices)
    repository.add_auto_registered(
        [Device(id="gas-101", institution="other", kind=DeviceKind.MULTI, auto_registered=True)]
    )
    gas = repository.device("gas-101")
    assert gas is not None
    assert (gas.institution, gas.kind, gas.auto_registered) == ("inst-1", DeviceKind.GAS, False)
    assert repository.institution("other") is None
    home = repository.institution("inst-1")
    assert home is not None and home.name == "阳光养老院"


# --- the directory ------------------------------------------------------------------------------


def test_load_and_lookup(tmp_path: Path, repository: RegistryRepository) -> None:
    registry = load_registry_file(write(tmp_path, "r.yaml", YAML))
    repository.upsert_institutions(registry.institutions)
    repository.upsert_devices(registry.devices)
    directory = DeviceDirectory(repository, auto_register=False)
    assert directory.lookup("gas-101") is None  # nothing until loaded
    assert directory.load() == 2
    gas = directory.lookup("gas-101")
    assert gas is not None
    assert (gas.id, gas.institution, gas.kind, gas.heartbeat_s) == (
        "gas-101",
        "inst-1",
        DeviceKind.GAS,
        120,
    )
    assert (gas.zone, dict(gas.thresholds)) == ("一层", {"gas_lel_pct": 20.0})
    smoke = directory.lookup("smoke-201")
    assert smoke is not None and (smoke.kind, smoke.heartbeat_s) == (DeviceKind.SMOKE, 300)
    assert directory.lookup("unknown") is None


def test_admit_a_known_device_returns_the_registry_entry(
    tmp_path: Path, repository: RegistryRepository
) -> None:
    registry = load_registry_file(write(tmp_path, "r.yaml", YAML))
    repository.upsert_institutions(registry.institutions)
    repository.upsert_devices(registry.devices)
    for auto_register in (True, False):
        directory = DeviceDirectory(repository, auto_register=auto_register)
        directory.load()
        info = directory.admit("inst-1", "gas-101", DeviceKind.SMOKE)
        assert info == directory.lookup("gas-101")
        assert info is not None and info.kind is DeviceKind.GAS  # the registry wins


def test_admit_auto_registers_and_stores_the_device(repository: RegistryRepository) -> None:
    directory = DeviceDirectory(repository, auto_register=True)
    assert directory.load() == 0
    info = directory.admit("new-inst", "new-dev", DeviceKind.CO)
    assert info == DeviceInfo("new-dev", "new-inst", DeviceKind.CO, 300)
    assert directory.lookup("new-dev") == info  # known in memory at once
    assert directory.admit("new-inst", "new-dev", DeviceKind.GAS) == info
    unknown_kind = directory.admit("new-inst", "other-dev", None)
    assert unknown_kind is not None and unknown_kind.kind is DeviceKind.MULTI
    assert repository.device("new-dev") is None, "written by the writer task, not on the way"
    assert directory.unwritten == 2
    assert directory.write_pending() == 2
    assert directory.unwritten == 0
    stored = repository.device("new-dev")
    assert stored is not None
    assert (stored.institution, stored.kind, stored.auto_registered) == (
        "new-inst",
        DeviceKind.CO,
        True,
    )
    assert [d.id for d in repository.devices()] == ["new-dev", "other-dev"]
    placeholder = repository.institution("new-inst")
    assert placeholder is not None and placeholder.type is InstitutionType.OTHER
    # A fresh directory reads them back: auto-registrations survive a restart.
    again = DeviceDirectory(repository, auto_register=False)
    assert again.load() == 2
    assert again.lookup("new-dev") == info


def test_admit_under_an_existing_institution_keeps_it(
    tmp_path: Path, repository: RegistryRepository
) -> None:
    repository.upsert_institutions(load_registry_file(write(tmp_path, "r.yaml", YAML)).institutions)
    directory = DeviceDirectory(repository, auto_register=True)
    directory.admit("inst-2", "smoke-9", DeviceKind.SMOKE)
    directory.write_pending()
    home = repository.institution("inst-2")
    assert home is not None
    assert (home.name, home.type) == ("儿童福利院", InstitutionType.CHILD_WELFARE)
    stored = repository.device("smoke-9")
    assert stored is not None and stored.institution == "inst-2"


async def test_the_writer_task_stores_admissions_and_reports_progress(
    repository: RegistryRepository,
) -> None:
    directory = DeviceDirectory(repository, auto_register=True)
    directory.admit("inst-1", "early", DeviceKind.GAS)
    assert repository.device("early") is None  # not written yet: no writer running
    component = Component("registry-writer")
    task = asyncio.create_task(directory.run_writer(component))
    for _ in range(100):
        if repository.device("early") is not None:
            break
        await asyncio.sleep(0.05)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert repository.device("early") is not None
    assert component.state()[0] is State.OK and component.waiting() == 0


def test_a_burst_of_auto_registrations_is_stored_in_batches(
    repository: RegistryRepository,
) -> None:
    count = AUTO_REGISTER_BATCH * 2 + 7
    directory = DeviceDirectory(repository, auto_register=True)
    for i in range(count):  # all queued before the writer runs: a fleet arriving at once
        directory.admit(f"inst-{i % 3}", f"dev-{i:05d}", DeviceKind.SMOKE)
    batches: list[int] = []
    store = repository.add_auto_registered

    def counting(devices: Iterable[Device]) -> None:
        batch = list(devices)
        batches.append(len(batch))
        store(batch)

    repository.add_auto_registered = counting  # type: ignore[method-assign]
    while directory.write_pending():  # as the writer task does: again at once while more wait
        pass
    assert batches == [AUTO_REGISTER_BATCH, AUTO_REGISTER_BATCH, 7]
    assert len(repository.devices()) == count
    stored = repository.device("dev-00004")
    assert stored is not None and (stored.institution, stored.auto_registered) == ("inst-1", True)


def test_devices_of_an_institution_share_one_string_for_it(
    repository: RegistryRepository,
) -> None:
    directory = DeviceDirectory(repository, auto_register=True)
    first = directory.admit("".join(["inst", "-1"]), "dev-1", DeviceKind.GAS)
    second = directory.admit("".join(["inst", "-1"]), "dev-2", DeviceKind.GAS)
    assert first is not None and second is not None
    assert first.institution == second.institution == "inst-1"
    assert first.institution is second.institution  # not a copy per device


def test_admit_refuses_unknown_devices_without_auto_register(
    repository: RegistryRepository,
) -> None:
    directory = DeviceDirectory(repository, auto_register=False)
    directory.load()
    assert directory.admit("inst-1", "stranger", DeviceKind.GAS) is None
    assert directory.write_pending() == 0
    assert directory.lookup("stranger") is None
    assert repository.devices() == []
    assert repository.institutions() == []


class _FailingRepository(RegistryRepository):
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        super().__init__(sessions)
        self.attempts = 0

    def add_auto_registered(self, devices: Iterable[Device]) -> None:
        self.attempts += 1
        raise OSError("database is down")


def test_a_database_failure_keeps_the_device_known_and_waiting(
    sessions: sessionmaker[Session],
) -> None:
    repository = _FailingRepository(sessions)
    directory = DeviceDirectory(repository, auto_register=True)
    info = directory.admit("inst-1", "dev-1", DeviceKind.GAS)
    with pytest.raises(OSError, match="down"):
        directory.write_pending()
    assert repository.attempts == 1
    assert directory.lookup("dev-1") == info
    assert directory.unwritten == 1, "kept for the next round"
    directory.admit("inst-1", "dev-2", DeviceKind.GAS)
    directory.admit("inst-1", "dev-1", DeviceKind.GAS)
    assert directory.unwritten == 2, "at most one entry per device while the database is away"


def test_import_works_before_the_data_dir_exists(tmp_path: Path) -> None:
    from hazardwatch.cli import main

    source = tmp_path / "institutions.csv"
    source.write_text("id,name\ninst-1,阳光养老院\n", encoding="utf-8")
    data = tmp_path / "not" / "yet"
    env = {"HAZARDWATCH_DATA_DIR": str(data)}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        assert main(["registry", "import", str(source)]) == 0
    assert (data / "hazardwatch.sqlite").is_file()
