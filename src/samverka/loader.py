"""`samverka load`: Bundles and NDJSON into the store, or through the REST API.

Straight into the store, files are spread over one process per core. Each process runs the same
transaction handler the REST API uses (validation, index extraction, atomic write), so a loaded
resource is indistinguishable from one written over HTTP; the database serialises the writes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .config import Settings
from .errors import FhirError
from .interactions import batch, transaction
from .interactions.context import Services

CHUNK = 500  # resources per transaction for NDJSON and collection Bundles


def files_of(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix in (".json", ".ndjson") and f.is_file())
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(p)
    return out


def bundles_of(path: Path) -> Iterator[dict[str, Any]]:
    """Transaction/batch Bundles as they are; collections and NDJSON as PUT/POST transactions."""
    if path.suffix == ".ndjson":
        resources = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
        yield from _as_transactions(resources)
        return
    doc = orjson.loads(path.read_bytes())
    if doc.get("resourceType") != "Bundle":
        yield from _as_transactions([doc])
    elif doc.get("type") in ("transaction", "batch"):
        yield doc
    else:
        yield from _as_transactions([e["resource"] for e in doc.get("entry", []) if "resource" in e])


def _as_transactions(resources: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for i in range(0, len(resources), CHUNK):
        entries = []
        for r in resources[i:i + CHUNK]:
            if r.get("id"):
                request = {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}
            else:
                request = {"method": "POST", "url": r["resourceType"]}
            entries.append({"resource": r, "request": request})
        yield {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _count(bundle: dict[str, Any]) -> int:
    return len(bundle.get("entry") or [])


_SVC: Services | None = None


def _init_worker(settings: Settings) -> None:
    global _SVC
    from .api.server import build_services

    _SVC = build_services(settings)


def _load_file(path: Path) -> tuple[int, list[str]]:
    assert _SVC is not None
    return _load_file_with(_SVC, path)


def _load_file_with(svc: Services, path: Path) -> tuple[int, list[str]]:
    done, errors = 0, []
    for bundle in bundles_of(path):
        try:
            if bundle.get("type") == "batch":
                batch.batch(svc, svc.settings.base_url, bundle)
            else:
                transaction.transaction(svc, svc.settings.base_url, bundle)
            done += _count(bundle)
        except FhirError as exc:
            errors.append(f"{path.name}: {exc.message}")
    return done, errors


def load_paths(svc: Services, paths: list[Path], console: Console, processes: int | None = None) -> int:
    """Load every file; print progress and the resources per second. Returns resources loaded."""
    files = files_of(paths)
    processes = processes or min(os.cpu_count() or 1, max(1, len(files)))
    started = time.perf_counter()
    loaded, failures = 0, []
    with _progress(console) as progress:
        task = progress.add_task("loading", total=len(files))
        if processes <= 1:
            for f in files:
                n, errs = _load_file_with(svc, f)
                loaded += n
                failures += errs
                progress.advance(task)
        else:
            with ProcessPoolExecutor(processes, initializer=_init_worker, initargs=(svc.settings,)) as pool:
                for fut in _as_done([pool.submit(_load_file, f) for f in files]):
                    n, errs = fut.result()
                    loaded += n
                    failures += errs
                    progress.advance(task)
    _summary(console, loaded, len(files), time.perf_counter() - started, failures)
    return loaded


def _summary(console: Console, loaded: int, files: int, elapsed: float, failures: list[str]) -> None:
    """The closing lines of a load: failures (the first 20) and the rate."""
    for failure in failures[:20]:
        console.print(f"[red]{failure}[/red]")
    console.print(f"loaded {loaded} resources from {files} file(s) in {elapsed:.1f} s: "
                  f"[bold]{loaded / elapsed if elapsed else 0:,.0f} resources/s[/bold]"
                  + (f", {len(failures)} bundle(s) failed" if failures else ""))


def _as_done(futures: list[Future[Any]]) -> Iterator[Future[Any]]:
    pending = set(futures)
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        yield from done


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console, transient=False)


def load_via_http(server: str, paths: list[Path], console: Console, concurrency: int = 4,
                  token: str | None = None) -> int:
    """POST each Bundle to the server's base URL with `concurrency` requests in flight."""
    import httpx

    files = files_of(paths)
    started = time.perf_counter()
    loaded, failures = 0, []
    headers = {"Content-Type": "application/fhir+json", "Prefer": "return=minimal"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    with httpx.Client(base_url=server.rstrip("/"), timeout=300, headers=headers) as client:

        def post(path: Path) -> tuple[int, list[str]]:
            n, errs = 0, []
            for bundle in bundles_of(path):
                r = client.post("", content=orjson.dumps(bundle))
                if r.status_code == 200:
                    n += _count(bundle)
                else:
                    errs.append(f"{path.name}: HTTP {r.status_code} {r.text[:300]}")
            return n, errs

        with _progress(console) as progress, ThreadPoolExecutor(concurrency) as pool:
            task = progress.add_task("loading", total=len(files))
            for fut in _as_done([pool.submit(post, f) for f in files]):
                n, errs = fut.result()
                loaded += n
                failures += errs
                progress.advance(task)
    _summary(console, loaded, len(files), time.perf_counter() - started, failures)
    return loaded
