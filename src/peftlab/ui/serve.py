"""Serving the dashboard with uvicorn; prints the address (the port it really got with --port 0)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

LOCAL = ("127.0.0.1", "localhost", "::1")


def serve(root: Path, host: str, port: int, allow: list[Path]) -> int:
    import uvicorn

    from peftlab.ui.app import create_app

    if host not in LOCAL:
        print(
            f"peftlab ui: WARNING: listening on {host}: anyone who can reach this address can read the runs "
            f"and launch training on this machine",
            file=sys.stderr,
            flush=True,
        )
    hosts = ["*"] if host not in LOCAL else ["127.0.0.1", "localhost", "[::1]"]
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    shown = "localhost" if host in LOCAL else host
    print(f"peftlab ui: http://{shown}:{sock.getsockname()[1]}/  (runs: {root.resolve()}; Ctrl-C stops)", flush=True)
    app = create_app(root, allow, hosts)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
