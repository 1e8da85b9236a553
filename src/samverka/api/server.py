"""Building the services from Settings, and the ASGI app factory that uvicorn workers call."""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import gc
import json
import logging
import os
from pathlib import Path

from starlette.applications import Starlette

from .. import events
from ..config import Settings
from ..interactions import export_run, reindex
from ..interactions.context import Services
from ..search.custom import LiveParams
from ..store import open_repository
from ..validation import Validator
from .app import create_app

SETTINGS_ENV = "SAMVERKA_SETTINGS"


def build_services(settings: Settings) -> Services:
    repo = open_repository(settings.data_dir, settings.database)
    validator = Validator.default() if settings.validate_writes else None
    live = LiveParams(repo)  # R4 plus the stored custom SearchParameters, reloaded when they change
    # every write transaction appends its outbox events (samverka.events); a local commit wakes the worker
    return events.wrap(Services(repo, live.registry(), validator, settings, live), events.Wakeup())


def settings_to_env(settings: Settings) -> str:
    return json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(settings).items()})


def settings_from_env() -> Settings:
    raw = json.loads(os.environ[SETTINGS_ENV])
    raw["data_dir"] = Path(raw["data_dir"])
    if raw.get("export_dir"):
        raw["export_dir"] = Path(raw["export_dir"])
    return Settings(**raw)


def app_from_env() -> Starlette:
    """The uvicorn factory (`--workers N` starts one per process)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s")
    svc = build_services(settings_from_env())
    reindex.resume_in_background(svc)  # a reindex whose runner died continues here
    export_run.resume_in_background(svc)  # so does a Bulk Data export
    app = create_app(svc, deliver=True)  # one worker per process; a database lease picks who delivers
    release_startup_memory()
    return app


def release_startup_memory() -> None:
    """Hand the memory freed after start-up (the parsed definitions' peak) back to the OS: about
    45 MB per worker with glibc, which otherwise keeps the freed heap mapped. What survives start-up (the
    definitions, the search registry) lives as long as the process: frozen, so that the collector's full
    passes no longer walk it (a full pass over it took ~80 ms)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    gc.freeze()
