"""The `samverka` command: serve, load, generate, check, reindex, admin, client and module."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .config import Settings
from .drill_cli import drill_app
from .module_cli import module_app

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Samverka: the shared FHIR R4 care record.")
console = Console(stderr=True)

DataDir = Annotated[Path, typer.Option("--data-dir", help="SQLite data folder (the embedded default)")]
Database = Annotated[str | None, typer.Option("--database", help="postgresql://... instead of SQLite")]


class AuthMode(StrEnum):
    on = "on"
    off = "off"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(a[4][0]).is_loopback for a in socket.getaddrinfo(host, None))
        except OSError:
            return False


@app.command()
def serve(
    data_dir: DataDir = Path("samverka-data"),
    database: Database = None,
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8080,
    workers: Annotated[int, typer.Option(help="server processes")] = 1,
    demo: Annotated[bool, typer.Option("--demo", help="load a generated demo region into a fresh store")] = False,
    demo_patients: Annotated[int, typer.Option(help="patients in the demo region")] = 50,
    max_body_bytes: Annotated[int, typer.Option(help="largest accepted request body")] = 32 * 1024 * 1024,
    max_bundle_entries: Annotated[int, typer.Option(help="largest accepted batch/transaction")] = 10_000,
    auth: Annotated[AuthMode, typer.Option(help="SMART on FHIR bearer tokens; off only on loopback, for development")]
    = AuthMode.on,
    public_url: Annotated[str | None, typer.Option(help="the origin clients use, e.g. https://fhir.region.se "
                                                        "(token audience and issuer); default: from each request")]
    = None,
    trust_issuer: Annotated[list[str] | None, typer.Option(
        "--trust-issuer", help="trust an external identity provider for the JWT-bearer grant: ISSUER=JWKS, "
                               "JWKS a JWK Set file or a loopback URL (repeatable)")] = None,
    event_retry_period: Annotated[float, typer.Option(
        help="seconds a subscription's notifications are retried before its status becomes error")] = 24 * 3600.0,
    event_backoff: Annotated[float, typer.Option(
        help="first retry delay in seconds of a failed notification (doubling each time)")] = 1.0,
    event_backoff_max: Annotated[float, typer.Option(help="longest retry delay in seconds")] = 300.0,
    event_lease: Annotated[float, typer.Option(
        help="seconds the delivering worker's lease lasts; another process takes over after it expires")] = 10.0,
    nats: Annotated[str | None, typer.Option(
        "--nats", help="also publish every committed event to NATS JetStream at this nats:// URL "
                       "(subjects samverka.events.<topic>; needs `pip install samverka[nats]`)")] = None,
    nats_stream: Annotated[str, typer.Option(
        "--nats-stream", help="the JetStream stream (created if missing, subjects samverka.events.>)")] = "SAMVERKA",
    export_dir: Annotated[Path | None, typer.Option(
        "--export-dir", help="where Bulk Data export files go (default: DATA_DIR/exports; with several hosts, "
                             "a folder they all see)")] = None,
    audit_read_flush: Annotated[bool, typer.Option(
        "--audit-read-flush", help="PostgreSQL: wait for the WAL flush of every read's audit record before "
                                   "answering (default: asynchronous commit, as SQLite's synchronous=NORMAL)")] = False,
) -> None:
    """Serve the FHIR R4 API at http://HOST:PORT/fhir."""
    import uvicorn

    from .api.server import SETTINGS_ENV, settings_to_env

    if auth is AuthMode.off and not is_loopback(host):
        console.print(f"[red]refusing to bind {host} with --auth off: without authentication only loopback "
                      "addresses (127.0.0.1, ::1, localhost) are allowed[/red]")
        raise typer.Exit(2)
    trusted = _trusted_issuers(trust_issuer or [])
    if nats is not None:
        _check_nats(nats_stream)
    settings = Settings(data_dir=data_dir, database=database, host=host, port=port,
                        max_body_bytes=max_body_bytes, max_bundle_entries=max_bundle_entries,
                        auth=auth is AuthMode.on, public_url=public_url, trusted_issuers=trusted,
                        event_retry_period=event_retry_period, event_backoff=event_backoff,
                        event_backoff_max=event_backoff_max, event_lease=event_lease, nats=nats,
                        nats_stream=nats_stream, audit_read_flush=audit_read_flush, export_dir=export_dir)
    if demo:
        _load_demo(settings, demo_patients)
        if settings.auth:
            _print_demo_token(settings)
            _print_demo_users(settings)
    os.environ[SETTINGS_ENV] = settings_to_env(settings)
    console.print(f"Samverka FHIR R4 server at [bold]{settings.base_url}[/bold] "
                  f"({'PostgreSQL' if database else f'SQLite in {data_dir}'}, {workers} worker(s), "
                  f"auth {auth.value})")
    uvicorn.run("samverka.api.server:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level="warning", access_log=False)


def _check_nats(stream: str) -> None:
    import importlib.util
    import re

    if importlib.util.find_spec("nats") is None:
        console.print("[red]--nats needs the NATS client: pip install 'samverka[nats]'[/red]")
        raise typer.Exit(2)
    if not re.fullmatch(r"[A-Za-z0-9_-]+", stream):
        console.print(f"[red]--nats-stream {stream!r}: a stream name is letters, digits, '_' and '-'[/red]")
        raise typer.Exit(2)


def _print_demo_token(settings: Settings) -> None:
    from .auth.tokens import demo_token
    from .store import open_repository

    repo = open_repository(settings.data_dir, settings.database)
    try:
        origin = (settings.public_url or settings.base_url.removesuffix("/fhir")).rstrip("/")
        token = demo_token(repo, origin)
    finally:
        repo.close()
    console.print("Auth is on. A demo access token (system/*.cruds, valid for one hour):", highlight=False,
                  soft_wrap=True)
    print(f"export TOKEN={token}", flush=True)
    console.print(f"  curl -H \"Authorization: Bearer $TOKEN\" '{settings.base_url}/Patient?_count=5'\n"
                  "Modules get their own credentials: see 'Authorization' in README.md "
                  "(samverka admin token, samverka client register).", highlight=False, soft_wrap=True)


def _trusted_issuers(specs: list[str]) -> tuple[str, ...]:
    """--trust-issuer values checked now (a clear error instead of a failing worker), file paths made absolute."""
    from .auth.idp import parse_trust

    out = []
    for spec in specs:
        try:
            issuer, source = parse_trust(spec)
        except ValueError as exc:
            console.print(f"[red]{exc}[/red]", highlight=False)
            raise typer.Exit(2) from exc
        if not source.startswith(("http://", "https://")):
            source = str(Path(source).resolve())
        out.append(f"{issuer}={source}")
    return tuple(out)


def _print_demo_users(settings: Settings) -> None:
    """Demo users get fresh passwords on every demo start; they are printed here and nowhere else."""
    from .api.server import build_services
    from .auth.demo import create_demo_users

    svc = build_services(settings)
    try:
        logins = create_demo_users(svc, settings.base_url)
    finally:
        svc.repo.close()
    origin = (settings.public_url or settings.base_url.removesuffix("/fhir")).rstrip("/")
    console.print(f"Demo users for the login page ({origin}/auth/authorize, reached through a SMART app); "
                  "new passwords on every start:", highlight=False, soft_wrap=True)
    for login in logins:
        units = "; ".join(f"{a.care_unit_name}{' (' + a.role + ')' if a.role else ''}" for a in login.user.assignments)
        print(f"  demo user {login.user.hsa_id}  password {login.password}  {login.user.name}: {units}", flush=True)


def _load_demo(settings: Settings, patients: int) -> None:
    from .api.server import build_services
    from .generate import write_region
    from .loader import load_paths
    from .store import HistoryQuery

    svc = build_services(settings)
    if svc.repo.history(HistoryQuery(count=1)):
        console.print("the store already holds data; not loading the demo region again")
        svc.repo.close()
        return
    with tempfile.TemporaryDirectory(prefix="samverka-demo-") as tmp:
        write_region(Path(tmp), patients, seed=1)
        load_paths(svc, [Path(tmp)], console)
    svc.repo.close()


@app.command()
def load(
    paths: Annotated[list[Path], typer.Argument(help="Bundle JSON files, NDJSON files or folders")],
    data_dir: DataDir = Path("samverka-data"),
    database: Database = None,
    server: Annotated[str | None, typer.Option("--server", help="load through the REST API at this base URL")]
    = None,
    concurrency: Annotated[int, typer.Option(help="parallel requests with --server")] = 4,
    token: Annotated[str | None, typer.Option("--token", envvar="SAMVERKA_TOKEN",
                                              help="bearer token for --server (or SAMVERKA_TOKEN)")] = None,
) -> None:
    """Load transaction, batch or collection Bundles and NDJSON files."""
    from .loader import load_paths, load_via_http

    if server:
        load_via_http(server, paths, console, concurrency, token)
        return
    from .api.server import build_services

    svc = build_services(Settings(data_dir=data_dir, database=database))
    try:
        load_paths(svc, paths, console)
    finally:
        svc.repo.close()


@app.command()
def generate(
    patients: Annotated[int, typer.Option(help="number of patients")] = 100,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same data)")] = 1,
    out: Annotated[Path, typer.Option(help="output folder")] = Path("generated"),
) -> None:
    """Write a synthetic Swedish region as FHIR transaction Bundles."""
    from .generate import write_region

    counts = write_region(out, patients, seed)
    total = sum(counts.values())
    console.print(f"wrote {total} resources for {patients} patients to {out}: "
                  + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


@app.command()
def check(data_dir: DataDir = Path("samverka-data"), database: Database = None) -> None:
    """Verify that current versions, history and index rows are consistent."""
    from .api.server import build_services
    from .integrity import full_check

    svc = build_services(Settings(data_dir=data_dir, database=database, validate_writes=False))
    try:
        problems, checked = full_check(svc)
    finally:
        svc.repo.close()
    if problems:
        for p in problems:
            console.print(f"[red]{p}[/red]")
        console.print(f"[red]{len(problems)} problem(s) found[/red]")
        raise typer.Exit(1)
    console.print(f"ok: {checked} resources consistent")


@app.command()
def reindex(
    data_dir: DataDir = Path("samverka-data"),
    database: Database = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="SearchParameter url (default: all not ready)")]
    = None,
    batch: Annotated[int, typer.Option(help="resources per transaction")] = 200,
    pause: Annotated[float, typer.Option(help="seconds to rest between batches (lets writers in)")] = 0.0,
) -> None:
    """Index existing resources for new or changed SearchParameters (resumes an unfinished job)."""
    import time

    from .api.server import build_services
    from .interactions import reindex as jobs

    svc = build_services(Settings(data_dir=data_dir, database=database, validate_writes=False))
    try:
        job = jobs.start(svc, param or None)
        if job is None:
            console.print("nothing to reindex: every search parameter is ready")
            return
        console.print(f"reindex job {job.id}: {', '.join(job.params)} ({job.total} resources)")

        def report(j: jobs.Job) -> None:
            console.print(f"job {j.id}: {min(j.done, j.total)}/{j.total} ({j.percent}%)", highlight=False)

        while True:
            done = jobs.run(svc, job, batch, report, pause)
            if done is not None:
                break
            current = jobs.jobs(svc, job.id)[0]  # another live runner has it: follow its progress
            if current.status != "running":
                done = current
                break
            report(current)
            time.sleep(1.0)
        if done.status != "done":
            console.print(f"[red]job {done.id} {done.status}: {done.error or ''}[/red]")
            raise typer.Exit(1)
        console.print(f"ok: job {done.id} done, {done.total} resources reindexed")
    finally:
        svc.repo.close()


audit_app = typer.Typer(no_args_is_help=True, help="The audit log: verify its hash chain, follow-up reports.")
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(data_dir: DataDir = Path("samverka-data"), database: Database = None) -> None:
    """Check the audit log's hash chains; exit 1 at the first edited, deleted or reordered record."""
    from .audit.logs import verify
    from .store import open_repository

    repo = open_repository(data_dir, database)
    try:
        verdicts = verify(repo)
    finally:
        repo.close()
    broken = False
    for c, verdict in verdicts:
        name = "" if c.name == "log" else f" ({c.name} chain)"
        if not verdict.ok:
            broken = True
            console.print(f"[red]audit log{name} broken at record {verdict.broken_at}: {verdict.reason} "
                          f"({verdict.checked} records before it are intact)[/red]", highlight=False)
        else:
            console.print(f"ok: {verdict.checked} audit records{name}, hash chain intact", highlight=False)
    if broken:
        raise typer.Exit(1)


class ExportFormat(StrEnum):
    ndjson = "ndjson"
    csv = "csv"


@audit_app.command("report")
def audit_report(
    patient: Annotated[str | None, typer.Option(help="accesses to this patient (id)")] = None,
    user: Annotated[str | None, typer.Option(help="accesses by this user (HSA-id)")] = None,
    unit: Annotated[str | None, typer.Option(help="accesses from this care unit (HSA-id)")] = None,
    start: Annotated[str | None, typer.Option("--from", help="from this date or instant")] = None,
    end: Annotated[str | None, typer.Option("--to", help="up to this date or instant (inclusive)")] = None,
    emergency: Annotated[bool, typer.Option("--emergency", help="only emergency accesses (nödåtkomst)")] = False,
    protected: Annotated[bool, typer.Option("--protected", help="only accesses to protected-identity patients")]
    = False,
    sample: Annotated[int | None, typer.Option(help="a random sample of this many records")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of the sample (same seed, same sample)")] = None,
    fmt: Annotated[ExportFormat, typer.Option("--format", help="FHIR AuditEvent NDJSON or national-contract CSV")]
    = ExportFormat.ndjson,
    data_dir: DataDir = Path("samverka-data"),
    database: Database = None,
) -> None:
    """Follow-up (logguppföljning): selected audit records as AuditEvent NDJSON or CSV on stdout."""
    from .audit.query import Report, export, report
    from .store import open_repository

    repo = open_repository(data_dir, database)
    try:
        events = report(repo, Report(patient, user, unit, start, end, emergency, protected, sample, seed))
    finally:
        repo.close()
    sys.stdout.write(export(events, fmt.value))
    sys.stdout.flush()
    console.print(f"{len(events)} audit record(s)", highlight=False)


admin_app = typer.Typer(no_args_is_help=True, help="Administer the built-in authorization server.")
user_app = typer.Typer(no_args_is_help=True, help="Logins for the embedded login page (Practitioners by HSA-id).")
app.add_typer(user_app, name="user")
client_app = typer.Typer(no_args_is_help=True, help="Register, list and revoke SMART clients (modules).")
app.add_typer(admin_app, name="admin")
app.add_typer(client_app, name="client")
app.add_typer(module_app, name="module")
app.add_typer(drill_app, name="drill")


@admin_app.command("token")
def admin_token(data_dir: DataDir = Path("samverka-data"), database: Database = None) -> None:
    """Print a short-lived (15 min) admin token for /auth/register and /auth/clients of this instance."""
    from .auth.tokens import admin_token as mint
    from .store import open_repository

    repo = open_repository(data_dir, database)
    try:
        print(mint(repo), flush=True)
    finally:
        repo.close()


@admin_app.command("rotate-keys")
def rotate_keys(data_dir: DataDir = Path("samverka-data"), database: Database = None) -> None:
    """Start signing with a new key; the old one keeps verifying until its tokens have expired."""
    from .auth.tokens import rotate
    from .store import open_repository

    repo = open_repository(data_dir, database)
    try:
        console.print(f"new signing key {rotate(repo)}", highlight=False)
    finally:
        repo.close()


@client_app.command("register")
def client_register(
    name: Annotated[str, typer.Option("--name", help="client_name")],
    scope: Annotated[str, typer.Option("--scope", help="the scopes it may be granted, e.g. 'system/Observation.rs'")],
    jwks: Annotated[Path | None, typer.Option("--jwks", help="file with its public JWK Set")] = None,
    jwks_uri: Annotated[str | None, typer.Option("--jwks-uri", help="loopback URL of its JWK Set")] = None,
    grant_type: Annotated[list[str] | None, typer.Option("--grant-type", help="default: client_credentials")]
    = None,
    auth_method: Annotated[str, typer.Option("--auth-method", help="private_key_jwt or none")] = "private_key_jwt",
    redirect_uri: Annotated[list[str] | None, typer.Option("--redirect-uri", help="an app's redirect URI, for "
                                                            "authorization_code (repeatable)")] = None,
    data_dir: DataDir = Path("samverka-data"),
    database: Database = None,
) -> None:
    """Register a client (as POST /auth/register does) and print its client_id."""
    import json

    from .auth.clients import OAuthError, register
    from .store import open_repository

    meta: dict[str, object] = {"client_name": name, "scope": scope, "token_endpoint_auth_method": auth_method}
    if jwks is not None:
        meta["jwks"] = json.loads(jwks.read_text())
    if jwks_uri is not None:
        meta["jwks_uri"] = jwks_uri
    if grant_type:
        meta["grant_types"] = grant_type
    if redirect_uri:
        meta["redirect_uris"] = redirect_uri
    repo = open_repository(data_dir, database)
    try:
        client = register(repo, meta)
    except OAuthError as exc:
        console.print(f"[red]{exc.code}: {exc}[/red]", highlight=False)
        raise typer.Exit(2) from exc
    finally:
        repo.close()
    print(client.client_id, flush=True)


@client_app.command("list")
def client_list(data_dir: DataDir = Path("samverka-data"), database: Database = None) -> None:
    """List registered clients (id, state, name, auth method, scopes)."""
    from .auth.store import list_clients
    from .store import open_repository

    repo = open_repository(data_dir, database)
    try:
        for c in list_clients(repo):
            state = "revoked" if c.revoked is not None else "active"
            print(f"{c.client_id}\t{state}\t{c.name}\t{c.auth_method}\t{c.scope}", flush=True)
    finally:
        repo.close()


@client_app.command("revoke")
def client_revoke(client_id: Annotated[str, typer.Argument(help="the client_id")],
                  data_dir: DataDir = Path("samverka-data"), database: Database = None) -> None:
    """Revoke a client: its tokens stop working at once and it gets no new ones."""
    from .auth.store import revoke_client
    from .store import open_repository

    repo = open_repository(data_dir, database)
    try:
        found = revoke_client(repo, client_id)
    finally:
        repo.close()
    if not found:
        console.print(f"[red]no client {client_id}[/red]", highlight=False)
        raise typer.Exit(1)
    console.print(f"revoked {client_id}", highlight=False)


@user_app.command("add")
def user_add(
    hsa_id: Annotated[str, typer.Option("--hsa-id", help="the Practitioner's HSA-id (its identifier in the store)")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="read the password from standard input")]
    = False,
    data_dir: DataDir = Path("samverka-data"),
    database: Database = None,
) -> None:
    """Give a Practitioner a login (or a new password); the password is stored as an argon2id hash."""
    from .auth import users
    from .store import open_repository

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    repo = open_repository(data_dir, database)
    try:
        user = users.lookup(repo, hsa_id)
        if user is None:
            console.print(f"[red]no active Practitioner has the HSA-id {hsa_id}; load it first[/red]", highlight=False)
            raise typer.Exit(1)
        try:
            users.set_password(repo, hsa_id, password)
        except ValueError as exc:
            console.print(f"[red]{exc}[/red]", highlight=False)
            raise typer.Exit(2) from exc
    finally:
        repo.close()
    units = ", ".join(a.care_unit for a in user.assignments) or "none (the user cannot log in until one exists)"
    console.print(f"login for {user.name} ({hsa_id}); assignments: {units}", highlight=False)


@user_app.command("list")
def user_list(data_dir: DataDir = Path("samverka-data"), database: Database = None) -> None:
    """List logins (HSA-id, state)."""
    from .auth import users
    from .store import open_repository

    repo = open_repository(data_dir, database)
    try:
        for hsa_id, enabled in users.list_logins(repo):
            print(f"{hsa_id}\t{'enabled' if enabled else 'disabled'}", flush=True)
    finally:
        repo.close()


@user_app.command("disable")
def user_disable(hsa_id: Annotated[str, typer.Argument(help="the HSA-id")], data_dir: DataDir = Path("samverka-data"),
                 database: Database = None) -> None:
    """Disable a login: no new logins and no refreshes (issued access tokens run out within minutes)."""
    from .auth import users
    from .store import open_repository

    repo = open_repository(data_dir, database)
    try:
        found = users.disable(repo, hsa_id)
    finally:
        repo.close()
    if not found:
        console.print(f"[red]no login {hsa_id}[/red]", highlight=False)
        raise typer.Exit(1)
    console.print(f"disabled {hsa_id}", highlight=False)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)



if __name__ == "__main__":
    main()
