"""`ablab ui`: parse, bind the dashboard's socket, print where it is, serve (ablab.ui.server). Imported by
cli only, whose top-level app takes this command in as its own (`app.add_typer(ui_app)`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ablab.cli.common import LabOpt, bounded, console, lab_dir

ui_app = typer.Typer(rich_markup_mode="markdown")


@ui_app.command("ui")
def ui(port: int = typer.Option(8765, "--port", callback=bounded(0, 65535, 8765),
                                help="The port to serve on (0: any free one)."),
       host: Optional[str] = typer.Option(None, "--host", help="The address to serve on (default 127.0.0.1). "
                                          "Another machine's reach, e.g. 0.0.0.0, only when named here."),
       lab: Optional[Path] = LabOpt) -> None:
    """Serve a live dashboard of the lab on http://127.0.0.1:8765/: the runs table, each run's loss curves
    as it trains, studies with their grid and verdict, baselines and their lineage. It reads the
    ledger and never writes it.

    Example: `ablab ui --port 8765`
    """
    from ablab.ui.server import bind, build_app, serve

    folder = lab_dir(lab)
    build_app(folder)  # a missing extra or ledger is said before the socket opens
    sock, warning = bind(host or "127.0.0.1", port, explicit=host is not None)
    if warning:
        typer.echo(f"warning: {warning}", err=True)
    address, bound_port = sock.getsockname()[:2]
    shown = f"[{address}]" if ":" in address else address
    console.print(f"ablab ui: http://{shown}:{bound_port}/ (Ctrl-C stops it)", highlight=False)
    serve(folder, sock)
