"""`samverka module register|list|show|disable|enable|replace`: the module registry from the command line.

Runs against the store directly (like `samverka client ...`), with the same operations as the admin API
(`/admin/modules`, samverka.api.modules); every change is audited as done by the local administrator.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from .config import Settings

module_app = typer.Typer(no_args_is_help=True, help="Register, inspect, disable, enable and replace modules.")
console = Console(stderr=True)

DataDir = Annotated[Path, typer.Option("--data-dir", help="SQLite data folder (the embedded default)")]
Database = Annotated[str | None, typer.Option("--database", help="postgresql://... instead of SQLite")]
AsJson = Annotated[bool, typer.Option("--json", help="print the module view as JSON")]


def _run(data_dir: Path, database: str | None, op: Callable[[Any], Any]) -> Any:
    """Run `op(services)`; a FhirError (bad manifest, unknown module, wrong state) exits 2 with its issues."""
    from .api.server import build_services
    from .errors import FhirError

    svc = build_services(Settings(data_dir=data_dir, database=database))
    try:
        return op(svc)
    except FhirError as exc:
        for issue in exc.issues:
            console.print(f"[red]{issue.diagnostics}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2 if exc.category.value in ("invalid", "conflict") else 1) from exc
    finally:
        svc.repo.close()


def _print_view(view: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(view, indent=2, sort_keys=True), flush=True)
        return
    lines = [f"module      {view['id']} ({view['name']}, {view['vendor']} {view['version']})",
             f"role        {view['role']}", f"state       {view['state']} (client {view['clientId']}: "
             f"{view['clientState']})", f"scopes      {' '.join(view['scopes'])}"]
    if view.get("replaces"):
        lines.append(f"replaces    {view['replaces']}")
    if view.get("replacedBy"):
        lines.append(f"replaced by {view['replacedBy']}")
    lines.append(f"event lag   {_dash(view['eventLag'])}   last delivery {_dash(view['lastDelivery'])}   "
                 f"error rate {_dash(view.get('errorRate'))} ({_dash(view.get('failedAttempts'))} of "
                 f"{_dash(view.get('deliveryAttempts'))} POSTs failed, recent window)")
    for s in view["subscriptions"]:
        lines.append(f"  Subscription/{s['id']}  {s['status']}  {s['topic']}  filter={_dash(s['filter'])} "
                     f"payload={s['payload']} events={_dash(s['eventsSinceSubscriptionStart'])} "
                     f"acknowledged={_dash(s['acknowledgedEvent'])} lag={_dash(s['lag'])} "
                     f"failures={_dash(s['consecutiveFailures'])} errorRate={_dash(s.get('errorRate'))}")
        if s.get("handover"):
            h = s["handover"]
            lines.append(f"    continues after {h['predecessor']} event {_dash(h['afterEvent'])} "
                         f"(outbox position {_dash(h['afterSequence'])})")
        if s.get("error"):
            lines.append(f"    error: {s['error']}")
    print("\n".join(lines), flush=True)


def _dash(v: Any) -> str:
    return "-" if v is None else str(v)


@module_app.command("register")
def register(manifest: Annotated[Path, typer.Argument(help="the module's manifest (YAML or JSON)", exists=True,
                                                      dir_okay=False)],
             data_dir: DataDir = Path("samverka-data"), database: Database = None, as_json: AsJson = False) -> None:
    """Register a module: its SMART backend-services client (exactly the declared scopes) and its subscriptions."""
    from .modules import registry
    from .modules.manifest import ManifestError, parse_text
    from .modules.records import administrator

    try:
        doc = parse_text(manifest.read_bytes())
    except ManifestError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc
    view = _run(data_dir, database, lambda svc: registry.register(svc, doc, administrator()))
    _print_view(view, as_json)


@module_app.command("list")
def list_(data_dir: DataDir = Path("samverka-data"), database: Database = None) -> None:
    """List modules: id, role, state, client_id, name, vendor, version, event lag, error rate."""
    from .modules import registry

    for m in _run(data_dir, database, registry.list_modules):
        print(f"{m['id']}\t{m['role']}\t{m['state']}\t{m['clientId']}\t{m['name']}\t{m['vendor']}\t{m['version']}"
              f"\t{_dash(m['eventLag'])}\t{_dash(m['errorRate'])}", flush=True)


@module_app.command("show")
def show(module_id: Annotated[str, typer.Argument(help="the module id")], data_dir: DataDir = Path("samverka-data"),
         database: Database = None, as_json: AsJson = False) -> None:
    """The module view: role, state, scopes, subscriptions with status, event lag and last delivery."""
    from .modules import registry

    _print_view(_run(data_dir, database, lambda svc: registry.view(svc, module_id)), as_json)


@module_app.command("disable")
def disable(module_id: Annotated[str, typer.Argument(help="the module id")],
            data_dir: DataDir = Path("samverka-data"), database: Database = None) -> None:
    """Disable a module: its client gets no tokens (issued ones are refused) and its subscriptions go off."""
    from .modules import registry
    from .modules.records import administrator

    view = _run(data_dir, database, lambda svc: registry.disable(svc, module_id, administrator()))
    console.print(f"disabled {module_id} ({len(view['subscriptions'])} subscription(s) off)", highlight=False)


@module_app.command("enable")
def enable(module_id: Annotated[str, typer.Argument(help="the module id")],
           data_dir: DataDir = Path("samverka-data"), database: Database = None) -> None:
    """Enable a disabled module again: new tokens, subscriptions requested again."""
    from .modules import registry
    from .modules.records import administrator

    view = _run(data_dir, database, lambda svc: registry.enable(svc, module_id, administrator()))
    console.print(f"enabled {module_id} ({view['state']})", highlight=False)


@module_app.command("replace")
def replace(old: Annotated[str, typer.Argument(help="the module that holds the role")],
            new: Annotated[str, typer.Argument(help="the registered (standby) module that takes it over")],
            data_dir: DataDir = Path("samverka-data"), database: Database = None, as_json: AsJson = False) -> None:
    """Hand OLD's role to NEW: OLD's client revoked and subscriptions off, NEW's created from OLD's last
    acknowledged event. Nothing OLD wrote is moved."""
    from .modules import registry
    from .modules.records import administrator

    _print_view(_run(data_dir, database, lambda svc: registry.replace(svc, old, new, administrator())), as_json)
