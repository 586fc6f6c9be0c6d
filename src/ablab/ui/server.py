"""`ablab ui`'s web server: the static page (ablab/ui/static/) and the JSON endpoints it polls.

Starlette for the routes and uvicorn to serve them (the `ui` extra). Every request opens the lab's
ledger read-only (ablab.store.reader) and closes it, so the server holds no lock, sees each row as
soon as a training process commits it, and cannot change the lab. It binds 127.0.0.1 unless another
address is asked for by name: the ledger holds configs, hosts and paths a lab may not want to share.

    GET /api/runs?status=&name=&tag=&where=k=v&sort=-val_loss&columns=model.d_model&limit=
    GET /api/runs/{id}                      run, config, provenance, events, notes, study links
    GET /api/runs/{id}/metrics?since=STEP   the metric rows after STEP, the status, the events
    GET /api/runs/{id}/samples              the prompt suite's continuations at every step
    GET /api/studies, /api/studies/{name}   the grid, verdicts, the plan's diff, per-arm curves
    GET /api/baselines                      dated baselines with their lineage
"""

from __future__ import annotations

import ipaddress
import json
import socket
from pathlib import Path
from typing import Any, Callable

from ablab.errors import UserError
from ablab.store.reader import ReadOnlyLedger
from ablab.store.tables import finite
from ablab.ui import views

try:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
except ImportError:  # the `ui` extra is not installed: build_app says how to install it
    Starlette = None  # type: ignore[assignment,misc]

STATIC = Path(__file__).parent / "static"
INSTALL_HINT = "`ablab ui` needs the ui extra; install it with `pip install 'ablab[ui]'`."


def _json(value: Any, status_code: int = 200) -> "Response":
    """JSON any browser parses: a NaN or infinity (a diverged loss) becomes null."""
    body = json.dumps(finite(value), allow_nan=False, default=str, separators=(",", ":"))
    return Response(body, status_code=status_code, media_type="application/json")


def build_app(lab: Path) -> "Starlette":
    """The dashboard of `lab` as an ASGI app (what uvicorn serves and tests call through TestClient)."""
    if Starlette is None:
        raise UserError(INSTALL_HINT)
    ReadOnlyLedger(lab).close()  # a folder without a readable ledger is refused now, not on each request

    def reading(answer: Callable[[ReadOnlyLedger, Request], Any], refused: int = 404) -> Callable:
        """An endpoint answering from a fresh read-only ledger; a UserError becomes its sentence as JSON
        with status `refused` (404: the run or study named in the path is not there), a BadQuery 400.
        A plain function: Starlette runs it in its thread pool, so a slow query never stalls the others."""
        def endpoint(request: Request) -> Response:
            try:
                with ReadOnlyLedger(lab) as ledger:
                    return _json(answer(ledger, request))
            except BadQuery as err:
                return _json({"error": str(err)}, 400)
            except UserError as err:
                return _json({"error": str(err)}, refused)
        return endpoint

    def runs_answer(ledger: ReadOnlyLedger, request: Request) -> Any:
        q = request.query_params
        limit = q.get("limit")
        return views.runs(lab, ledger, status_=q.get("status") or None, name=q.get("name"), tag=q.get("tag"),
                          where=q.getlist("where"), sort=q.get("sort"), columns=q.getlist("columns"),
                          limit=_integer(limit, "limit") if limit else None)

    routes = [
        Route("/api/runs", reading(runs_answer, refused=400)),  # a filter, sort or column it cannot use
        Route("/api/runs/{ref}", reading(lambda ledger, r: views.run(ledger, r.path_params["ref"]))),
        Route("/api/runs/{ref}/metrics", reading(lambda ledger, r: views.metrics_since(
            ledger, r.path_params["ref"], _integer(r.query_params.get("since", "-1"), "since")))),
        Route("/api/runs/{ref}/samples", reading(lambda ledger, r: views.samples(ledger, r.path_params["ref"]))),
        Route("/api/studies", reading(lambda ledger, r: views.studies(ledger))),
        Route("/api/studies/{name}", reading(lambda ledger, r: views.study(lab, ledger, r.path_params["name"]))),
        Route("/api/baselines", reading(lambda ledger, r: views.baselines(ledger))),
        Mount("/", StaticFiles(directory=STATIC, html=True)),
    ]
    return Starlette(routes=routes)


class BadQuery(UserError):
    """A query parameter that is not what its endpoint reads (answered 400, not 404)."""


def _integer(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise BadQuery(f"{name}={text!r} is not a whole number; give e.g. {name}=100.") from None


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or a name) is this machine only: 127.0.0.0/8, ::1, or localhost."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        raise UserError(f"--host {host!r} is neither an address nor a name this machine resolves; "
                        "give e.g. --host 127.0.0.1.") from None
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def bind(host: str, port: int, explicit: bool = False) -> tuple[socket.socket, str | None]:
    """(a listening socket for the dashboard, a warning to print or None). A loopback `host` is bound
    as it is; another one only when the user named it (`explicit`: `ablab ui --host`), with a warning
    that the network can read the ledger through it, and otherwise refused: the server never opens
    itself to another interface on its own."""
    address = host
    warning = None if is_loopback(address) else (
        f"Serving on {address}, which other machines can reach: anyone on that network can read this lab's "
        "runs, configs and hosts (the dashboard has no login).")
    if warning and not explicit:
        raise UserError(f"Refusing to serve on {address}, which other machines can reach; pass --host {address} "
                        "to mean it, or leave --host out for 127.0.0.1.")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise UserError(f"Cannot serve on {address}:{port} ({err.strerror or err}); pick another --port.") from None
    return sock, warning


def serve(lab: Path, sock: socket.socket) -> None:
    """Serve the dashboard on `sock` (from bind) until Ctrl-C."""
    if Starlette is None:
        raise UserError(INSTALL_HINT)
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(build_app(lab), log_level="warning"))
    server.run(sockets=[sock])
