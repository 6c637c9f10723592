"""Serving the dashboard with uvicorn; prints the address (the port it really got with --port 0). The
socket is bound and listening here, before the address is printed, so a port that is taken, a host name that does not
resolve or a port out of range is one line and exit 2 (UserError), not a traceback from inside uvicorn."""

from __future__ import annotations

import errno
import socket
import sys
from pathlib import Path

from peftlab.errors import UserError

LOCAL = ("127.0.0.1", "localhost", "::1")


def listen_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (IPv4 or IPv6, whichever the host resolves to); UserError naming the
    option to change otherwise."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port}: a port is a number from 1 to 65535 (0: any free port)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        reason = e.strerror if isinstance(e, socket.gaierror) else str(e)
        raise UserError(
            f"--host {host}: not an address this machine can listen on ({reason}); "
            f"e.g. --host 127.0.0.1 (this machine only) or --host 0.0.0.0 (every network)"
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UserError(
                f"--port {port}: already in use on {host} (another `peftlab ui`?); stop that one, "
                f"choose another port, or --port 0 for any free port"
            ) from None
        if e.errno == errno.EACCES:
            raise UserError(
                f"--port {port}: not allowed for this user (ports below 1024 need root); use e.g. --port 7860"
            ) from None
        raise UserError(
            f"--host {host} --port {port}: cannot listen there ({e.strerror}); --host must be an address "
            f"of this machine, e.g. 127.0.0.1"
        ) from None
    # listening before the address is printed: a bound socket that does not listen yet refuses connections,
    # and uvicorn listens only once its loop has started; until then the kernel queues them (uvicorn's own
    # listen() later only sets the queue's length again)
    sock.listen(2048)
    return sock


def url_host(host: str, sock: socket.socket) -> str:
    """How the printed address names the host: localhost for the IPv4 loopback, [addr] for IPv6."""
    if host in ("127.0.0.1", "localhost"):
        return "localhost"
    shown = host if host not in ("", "0.0.0.0", "::") else sock.getsockname()[0]
    return f"[{shown}]" if ":" in shown else shown


def serve(
    root: Path,
    host: str,
    port: int,
    allow: list[Path],
    allow_hub: bool = False,
    allow_remote_code: bool = False,
) -> int:
    sock = listen_socket(host, port)
    import uvicorn

    from peftlab.ui.app import create_app

    if host not in LOCAL:
        print(
            f"peftlab ui: WARNING: listening on {host}: anyone who can reach this address can read the runs "
            f"and launch training on this machine",
            file=sys.stderr,
            flush=True,
        )
    # Host headers a local dashboard answers (a DNS-rebinding page names its own host); IPv6 in brackets
    hosts = ["*"] if host not in LOCAL else ["127.0.0.1", "localhost", "[::1]"]
    app = create_app(root, allow, hosts, allow_hub=allow_hub, allow_remote_code=allow_remote_code)
    print(
        f"peftlab ui: http://{url_host(host, sock)}:{sock.getsockname()[1]}/  (runs: {root.resolve()}; Ctrl-C stops)",
        flush=True,
    )
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
