"""The `samverka` command: serve, load, generate and check."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .config import Settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Samverka: the shared FHIR R4 care record.")
console = Console(stderr=True)

DataDir = Annotated[Path, typer.Option("--data-dir", help="SQLite data folder (the embedded default)")]
Database = Annotated[str | None, typer.Option("--database", help="postgresql://... instead of SQLite")]


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
) -> None:
    """Serve the FHIR R4 API at http://HOST:PORT/fhir."""
    import uvicorn

    from .api.server import SETTINGS_ENV, settings_to_env

    if not is_loopback(host):
        console.print(f"[red]refusing to bind {host}: there is no authentication yet, so only loopback "
                      "addresses (127.0.0.1, ::1, localhost) are allowed[/red]")
        raise typer.Exit(2)
    settings = Settings(data_dir=data_dir, database=database, host=host, port=port,
                        max_body_bytes=max_body_bytes, max_bundle_entries=max_bundle_entries)
    if demo:
        _load_demo(settings, demo_patients)
    os.environ[SETTINGS_ENV] = settings_to_env(settings)
    console.print(f"Samverka FHIR R4 server at [bold]{settings.base_url}[/bold] "
                  f"({'PostgreSQL' if database else f'SQLite in {data_dir}'}, {workers} worker(s))")
    uvicorn.run("samverka.api.server:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level="warning", access_log=False)


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
) -> None:
    """Load transaction, batch or collection Bundles and NDJSON files."""
    from .loader import load_paths, load_via_http

    if server:
        load_via_http(server, paths, console, concurrency)
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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)



if __name__ == "__main__":
    main()
