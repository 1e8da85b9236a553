"""`samverka drill replace-module`: the module replacement drill (samverka.drill.replace_module) from the
command line. It prints a short report and exits 1 when a check fails, 2 when a step could not be done."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

drill_app = typer.Typer(no_args_is_help=True, help="Operational drills against real processes.")
console = Console(stderr=True)


@drill_app.command("replace-module")
def replace_module(
    work_dir: Annotated[Path | None, typer.Option("--work-dir", help="keep data, keys, state and logs here "
                                                  "(default: a temporary folder, removed when the drill passes)")]
    = None,
    database: Annotated[str | None, typer.Option("--database", help="an empty postgresql://... database "
                                                 "instead of SQLite")] = None,
    examples: Annotated[Path | None, typer.Option("--examples", help="the folder that holds examples/ "
                                                  "(default: the working directory or the checkout)")] = None,
    kill_after: Annotated[int, typer.Option("--kill-after", help="referrals booking_a books before its kill -9")]
    = 6,
    after_restart: Annotated[int, typer.Option("--after-restart", help="writes after the platform's restart")]
    = 12,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds for every wait")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Replace booking_a by booking_b under load, with a kill -9 of booking_a and of the platform; check that
    no event is lost, none duplicated beyond at-least-once, booking_a's token refused and the handover audited."""
    from .drill.processes import DrillError
    from .drill.replace_module import Options, run

    try:
        report = run(Options(work=work_dir, database=database, examples=examples, kill_after=kill_after,
                             after_restart=after_restart, timeout=timeout))
    except DrillError as exc:
        console.print(f"[red]the drill could not be carried out: {exc}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc
    print(json.dumps(report.as_json(), indent=2) if as_json else report.text(), flush=True)
    if not report.passed:
        raise typer.Exit(1)
