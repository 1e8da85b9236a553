"""What every example module shares: its command line, its key, and serving its receiver.

`python -m examples.<name> keygen KEYFILE` writes a new private key (ES384, a JWK) and prints the public
JWK Set for the manifest; `python -m examples.<name> --server URL --key KEYFILE --client-id ID --port N
--data DIR` runs the module: a uvicorn server on 127.0.0.1:N with the notification receiver at
`/notify`, the module's public JWK Set at `/jwks.json` (for a manifest that gives `jwks_uri`) and
`/healthz`. Only `samverka.sdk`, joserfc (the SDK's own dependency), starlette, uvicorn and the
standard library are used.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from joserfc.jwk import ECKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from samverka.sdk import AsyncFhirClient, BackendAuth, NotificationReceiver

log = logging.getLogger("examples")


def keygen(path: Path) -> dict[str, Any]:
    """A new ES384 key pair: the private JWK written to `path` (mode 0600), the public JWK Set returned."""
    key = ECKey.generate_key("P-384", parameters={"alg": "ES384", "use": "sig"}, auto_kid=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(key.as_dict(private=True), f)
    return {"keys": [key.as_dict(private=False)]}


def public_jwks(private_jwk: dict[str, Any]) -> dict[str, Any]:
    """The public half of a private JWK, as a JWK Set."""
    drop = {"d", "p", "q", "dp", "dq", "qi"}
    return {"keys": [{k: v for k, v in private_jwk.items() if k not in drop}]}


@dataclass
class Options:
    server: str  # the FHIR base, http://host:port/fhir
    key: Path
    client_id: str
    port: int
    data: Path


@dataclass
class Context:
    """What a module's code gets: its options, the FHIR client (its own token) and its private JWK."""

    options: Options
    fhir: AsyncFhirClient
    private_jwk: dict[str, Any]


def parse(name: str, default_port: int, argv: Sequence[str]) -> Options | None:
    """The command line; None after `keygen` (done)."""
    if argv[:1] == ["keygen"]:
        p = argparse.ArgumentParser(prog=f"python -m examples.{name} keygen",
                                    description="write a new private key and print the public JWK Set")
        p.add_argument("keyfile", type=Path)
        a = p.parse_args(argv[1:])
        print(json.dumps(keygen(a.keyfile), indent=2))
        return None
    p = argparse.ArgumentParser(prog=f"python -m examples.{name}", description=f"run the {name} example module")
    p.add_argument("--server", required=True, help="FHIR base URL, e.g. http://127.0.0.1:8080/fhir")
    p.add_argument("--key", required=True, type=Path, help="the module's private JWK file (from keygen)")
    p.add_argument("--client-id", required=True, help="the clientId that `samverka module register` printed")
    p.add_argument("--port", type=int, default=default_port, help="port of the notification endpoint")
    p.add_argument("--data", type=Path, default=Path(f"{name}-data"), help="folder for the module's own state")
    a = p.parse_args(argv)
    return Options(a.server, a.key, a.client_id, a.port, a.data)


Startup = Callable[[Context], Awaitable[None]]


def run(name: str, default_port: int, scope: str,
        build: Callable[[Context], tuple[NotificationReceiver, Startup | None]],
        argv: Sequence[str] | None = None) -> None:
    """Parse the command line and serve the module until it is stopped."""
    options = parse(name, default_port, list(sys.argv[1:] if argv is None else argv))
    if options is None:
        return
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name} %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    options.data.mkdir(parents=True, exist_ok=True)
    private = json.loads(options.key.read_text())
    fhir = AsyncFhirClient(options.server, BackendAuth(options.client_id, private, scope))
    ctx = Context(options, fhir, private)
    receiver, startup = build(ctx)
    jwks = public_jwks(private)

    async def jwks_route(_: Request) -> JSONResponse:
        return JSONResponse(jwks)

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"module": name, "handled": receiver.handled, "duplicates": receiver.duplicates,
                             "filled": receiver.filled, **getattr(receiver, "info", {})})

    @asynccontextmanager
    async def lifespan(_: Starlette) -> Any:
        if startup is not None:
            await startup(ctx)
        yield
        await fhir.close()

    app = Starlette(routes=[Route("/notify", receiver.receive, methods=["POST"]), Route("/jwks.json", jwks_route),
                            Route("/healthz", health)], lifespan=lifespan)
    log.info("%s listening on 127.0.0.1:%d, server %s", name, options.port, options.server)
    uvicorn.run(app, host="127.0.0.1", port=options.port, log_level="warning")
