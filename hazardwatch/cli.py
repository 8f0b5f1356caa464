"""The `hazardwatch` command line."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import HazardwatchError
from core.logs import setup_logging
from core.settings import EMBEDDED_BROKER_PORT, Settings, load_settings
from hazardwatch.demo_options import add_demo_options

log = logging.getLogger("hazardwatch")


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the whole service in this process."""
    from hazardwatch.service import Service, run
    from hazardwatch.supervisor import TaskFailedError

    settings = _settings(args)
    log.info("starting with %s", settings.redacted())
    try:
        asyncio.run(run(Service(settings, embedded_broker_port=args.embedded_broker_port)))
    except TaskFailedError as exc:  # logged with its cause; systemd or compose starts us again
        log.critical("hazardwatch stopped: %s", exc)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the service with embedded defaults plus a simulated fleet."""
    from hazardwatch.demo import demo_fleet, run_demo
    from simulators.registry import write_registry

    if args.export_registry is not None:
        spec = demo_fleet(args)
        write_registry(spec, args.export_registry)
        print(
            f"demo: wrote {len(spec.institutions)} institutions and {len(spec.devices)} devices "
            f"to {args.export_registry}"
        )
        return 0
    return asyncio.run(run_demo(_settings(args), args))


def cmd_simulate(args: argparse.Namespace) -> int:
    """Publish simulated detector traffic to a broker."""
    from simulators.cli import run as run_simulator

    return asyncio.run(run_simulator(args))


def cmd_registry_import(args: argparse.Namespace) -> int:
    """Load institutions and devices from a CSV or YAML file."""
    from core.db import make_engine, session_factory, upgrade
    from core.registry.importer import load_registry_file, summary
    from core.registry.repository import RegistryRepository

    settings = _settings(args)
    registry = load_registry_file(args.file)
    upgrade(settings.sql_url)
    repository = RegistryRepository(session_factory(make_engine(settings.sql_url)))
    repository.upsert_institutions(registry.institutions)
    repository.upsert_devices(registry.devices)
    print(f"imported {summary(registry)} from {args.file}")
    return 0


def _accounts(args: argparse.Namespace) -> Any:
    from core.accounts import Accounts
    from core.db import make_engine, upgrade

    settings = _settings(args)
    upgrade(settings.sql_url)
    return Accounts(make_engine(settings.sql_url), settings.auth)


def _actor() -> str:
    """Who acts, in the audit log: the command line and the account running it."""
    try:
        who = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (a bare container)
        who = "unknown"
    return f"cli:{who}"[:64]


def _password(args: argparse.Namespace, name: str) -> str:
    """The password: the first line of stdin (--password-stdin), else asked twice at the
    terminal (never an argument: it would show in the process list and the shell history)."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise HazardwatchError(
            "no terminal to ask for the password: pipe it in with --password-stdin"
        )
    first = getpass.getpass(f"password for {name}: ")
    if getpass.getpass("the same again: ") != first:
        raise HazardwatchError("the two passwords differ: nothing changed")
    return first


def _day(moment: Any) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def cmd_user_add(args: argparse.Namespace) -> int:
    """Add a user: a person with a password (asked for), a machine with a token (printed
    once), or both."""
    from core.users import Role, User

    user = User(
        name=args.name,
        display_name=args.display_name or args.name,
        role=Role(args.role),
        institutions=tuple(args.institution),
        towns=tuple(args.town),
    )
    wants_password = args.password or args.password_stdin
    password = _password(args, user.name) if wants_password else None
    accounts = _accounts(args)
    token = accounts.add_user(
        user,
        password=password,
        with_token=args.token or not wants_password,
        token_days=args.expires_days,
        actor=_actor(),
    )
    accounts.audit.flush()
    how = "logs in with a password" if password is not None else ""
    if token is None:
        print(f"user {user.name} ({user.role}) added; {how}")
        return 0
    days = args.expires_days or accounts.settings.token_days
    also = f"{how}, " if how else ""
    # The token goes to the terminal only, this once: only its hash is kept.
    print(
        f"user {user.name} ({user.role}) added; {also}token expires in {days} days; "
        f"bearer token: {token}"
    )
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    """List the users and how they get in (never a secret)."""
    for account in _accounts(args).users.accounts():
        user = account.user
        scope = ", ".join(user.institutions + user.towns) or "all institutions"
        ways = ["password"] if account.has_password else []
        if account.token_expires_at is not None:
            ways.append(f"token until {_day(account.token_expires_at)}")
        if account.previous_token_until is not None:
            ways.append(f"old token until {_day(account.previous_token_until)}")
        state = " (revoked)" if account.disabled else ""
        print(
            f"{user.name}\t{user.role}\t{user.display_name}\t{scope}\t"
            f"{'; '.join(ways) or '-'}{state}"
        )
    return 0


def cmd_user_revoke(args: argparse.Namespace) -> int:
    """Disable a user; their token and their sessions stop working."""
    accounts = _accounts(args)
    done = accounts.revoke(args.name, actor=_actor())
    accounts.audit.flush()
    if not done:
        print(f"hazardwatch: no user {args.name!r}", file=sys.stderr)
        return 2
    print(f"user {args.name} revoked")
    return 0


def cmd_user_passwd(args: argparse.Namespace) -> int:
    """Set a user's password (an admin's reset): their sessions end."""
    password = _password(args, args.name)
    accounts = _accounts(args)
    ended = accounts.reset_password(args.name, password, actor=_actor())
    accounts.audit.flush()
    print(f"password of {args.name} set; {ended} session(s) ended")
    return 0


def cmd_user_rotate_token(args: argparse.Namespace) -> int:
    """A new token for a user, printed once; the old one stops working (after the grace)."""
    from datetime import timedelta

    accounts = _accounts(args)
    grace = timedelta(hours=args.grace_hours)
    token = accounts.rotate_token(
        args.name, grace=grace, token_days=args.expires_days, actor=_actor()
    )
    accounts.audit.flush()
    old = f"works for {args.grace_hours:g} more hours" if grace else "stops working now"
    days = args.expires_days or accounts.settings.token_days
    print(
        f"new token of {args.name} expires in {days} days; the old one {old}; bearer token: {token}"
    )
    return 0


def cmd_user_unlock(args: argparse.Namespace) -> int:
    """Forget a user name's failed logins: its lock-out ends."""
    accounts = _accounts(args)
    accounts.unlock(args.name, actor=_actor())
    accounts.audit.flush()
    print(f"failed logins of {args.name} forgotten")
    return 0


def cmd_admin_token_revoke(args: argparse.Namespace) -> int:
    """Refuse the bootstrap admin token from now on (once a real admin exists)."""
    settings = _settings(args)
    accounts = _accounts(args)
    marker = accounts.revoke_bootstrap_token(settings.data_dir, actor=_actor())
    accounts.audit.flush()
    print(
        f"the bootstrap admin token is refused from now on (within seconds by a running "
        f"service); HAZARDWATCH_ADMIN_TOKEN may be removed. Marker: {marker}"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write the monthly ledger or dispatch table as CSV or XLSX."""
    from core.db import make_engine, session_factory, upgrade
    from core.registry.repository import RegistryRepository
    from tickets.reports import Month, Reports

    settings = _settings(args)
    try:
        month = Month.parse(args.month)
    except ValueError as exc:
        print(f"hazardwatch: {exc}", file=sys.stderr)
        return 2
    upgrade(settings.sql_url)
    engine = make_engine(settings.sql_url)
    names = {
        i.id: (i.name, i.town) for i in RegistryRepository(session_factory(engine)).institutions()
    }
    reports = Reports(engine, names)
    build = reports.ledger if args.report == "ledger" else reports.dispatch
    table = build(month, args.lang, args.institution or None)
    output: Path = args.output or Path(f"{args.report}-{month}-{args.lang}.xlsx")
    data = table.csv() if output.suffix.lower() == ".csv" else table.xlsx()
    output.write_bytes(data)
    print(f"{table.title}: {len(table.rows)} rows written to {output}")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Apply database migrations."""
    from core.db import upgrade

    upgrade(_settings(args).sql_url)
    print("database is up to date")
    return 0


def cmd_dead_letters(args: argparse.Namespace) -> int:
    """Print the newest dead letters."""
    from ingest.deadletters import DeadLetterStore

    store = DeadLetterStore(_settings(args).data_dir / "deadletters.sqlite")
    for key, letter in store.list(reason=args.reason, limit=args.limit):
        payload = letter.payload[:80].decode("utf-8", "replace")
        print(f"{key}\t{letter.reason}\t{letter.topic}\t{letter.detail}\t{payload!r}")
    print(f"per reason: {store.counts()}")
    return 0


def _password_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    if required:
        parser.set_defaults(password=True)
        parser.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from the first line of stdin (default: ask twice)",
        )
        return
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--password", action="store_true", help="ask for a password, twice")
    group.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin's first line"
    )


def _days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        days = 0
    if not 1 <= days <= 3650:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days from 1 to 3650")
    return days


def _expiry_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--expires-days",
        type=_days,
        metavar="DAYS",
        help="the token expires after this many days, 1-3650 (default [auth] token_days, 365)",
    )


def _add_user_verbs(verbs: Any, common: argparse.ArgumentParser) -> None:
    """`user …` and `admin-token …`."""
    user = verbs.add_parser("user", help="users: passwords, tokens, revocation")
    user_verbs = user.add_subparsers(dest="user_verb", required=True)
    add = user_verbs.add_parser(
        "add",
        parents=[common],
        help="add a user: with --password a person (asked for it), else a machine (a token)",
    )
    add.add_argument("name", help="login name")
    add.add_argument(
        "--role",
        required=True,
        choices=["admin", "duty_officer", "bureau", "town_office", "institution", "contractor"],
    )
    add.add_argument("--display-name", help="name shown in the audit trail's context")
    add.add_argument(
        "--institution", action="append", default=[], help="an institution id (repeat)"
    )
    add.add_argument("--town", action="append", default=[], help="a town, for town_office")
    _password_options(add, required=False)
    add.add_argument(
        "--token",
        action="store_true",
        help="a bearer token too (a user without a password always gets one)",
    )
    _expiry_option(add)
    add.set_defaults(func=cmd_user_add)
    user_verbs.add_parser("list", parents=[common], help="list users").set_defaults(
        func=cmd_user_list
    )
    revoke = user_verbs.add_parser(
        "revoke", parents=[common], help="disable a user: token and sessions stop working"
    )
    revoke.add_argument("name")
    revoke.set_defaults(func=cmd_user_revoke)
    passwd = user_verbs.add_parser(
        "passwd", parents=[common], help="set a user's password (their sessions end)"
    )
    passwd.add_argument("name")
    _password_options(passwd, required=True)
    passwd.set_defaults(func=cmd_user_passwd)
    rotate = user_verbs.add_parser(
        "rotate-token", parents=[common], help="a new token for a user, printed once"
    )
    rotate.add_argument("name")
    rotate.add_argument(
        "--grace-hours",
        type=float,
        default=0.0,
        help="the old token works this much longer, at most 168 (default 0: stops now)",
    )
    _expiry_option(rotate)
    rotate.set_defaults(func=cmd_user_rotate_token)
    unlock = user_verbs.add_parser(
        "unlock", parents=[common], help="forget a user name's failed logins (lock-out ends)"
    )
    unlock.add_argument("name")
    unlock.set_defaults(func=cmd_user_unlock)
    bootstrap = verbs.add_parser("admin-token", help="the bootstrap admin token")
    bootstrap_verbs = bootstrap.add_subparsers(dest="admin_token_verb", required=True)
    bootstrap_verbs.add_parser(
        "revoke", parents=[common], help="refuse it from now on (an admin user must exist)"
    ).set_defaults(func=cmd_admin_token_revoke)


def build_parser() -> argparse.ArgumentParser:
    """Every verb with its options."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="TOML settings file (environment wins)")
    common.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, …")
    parser = argparse.ArgumentParser(prog="hazardwatch", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)

    def verb(
        name: str, func: Callable[[argparse.Namespace], int], help_: str
    ) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, parents=[common], help=help_, description=help_)
        sub.set_defaults(func=func)
        return sub

    run_verb = verb("run", cmd_run, "run the whole service")
    demo = verb(
        "demo",
        cmd_demo,
        "run the service with embedded defaults, a simulated district and its story",
    )
    for sub in (run_verb, demo):
        sub.add_argument(
            "--embedded-broker-port",
            type=int,
            default=EMBEDDED_BROKER_PORT,
            metavar="PORT",
            help=f"port of the embedded MQTT broker, used when HAZARDWATCH_MQTT_URL is unset "
            f"(default {EMBEDDED_BROKER_PORT})",
        )
    from simulators.cli import add_arguments

    add_arguments(demo, standalone=False)
    add_demo_options(demo)
    add_arguments(verb("simulate", cmd_simulate, "simulate detectors against a broker"))
    registry = verbs.add_parser("registry", help="institutions and devices")
    registry_verbs = registry.add_subparsers(dest="registry_verb", required=True)
    imp = registry_verbs.add_parser("import", parents=[common], help="import a CSV or YAML file")
    imp.add_argument("file", type=Path)
    imp.set_defaults(func=cmd_registry_import)
    _add_user_verbs(verbs, common)
    report = verbs.add_parser("report", help="monthly reports of the hazard ledger")
    report_verbs = report.add_subparsers(dest="report", required=True)
    for name, what in (
        ("ledger", "the hazard list (清单) of a month"),
        ("dispatch", "the dispatch table (调度表) of a month"),
    ):
        sub = report_verbs.add_parser(name, parents=[common], help=what)
        sub.add_argument("--month", required=True, help="YYYY-MM, in China Standard Time")
        sub.add_argument("--lang", choices=["zh", "en"], default="zh", help="column headers")
        sub.add_argument(
            "--output", type=Path, help="FILE.xlsx or FILE.csv (default NAME-MONTH-LANG.xlsx)"
        )
        sub.add_argument("--institution", action="append", default=[], help="only these (repeat)")
        sub.set_defaults(func=cmd_report)
    db = verbs.add_parser("db", help="the SQL database")
    db_verbs = db.add_subparsers(dest="db_verb", required=True)
    db_verbs.add_parser("upgrade", parents=[common], help="apply migrations").set_defaults(
        func=cmd_db_upgrade
    )
    dead = verb("dead-letters", cmd_dead_letters, "list rejected messages")
    dead.add_argument("--reason")
    dead.add_argument("--limit", type=int, default=20)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `hazardwatch` program."""
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level.upper())
    try:
        code: int = args.func(args)
    except HazardwatchError as exc:
        print(f"hazardwatch: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
