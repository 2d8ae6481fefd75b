"""Where the server listens: the port is checked and the socket bound before the (slow) model load.

Binding first means ``--port 99999`` or a port already taken is a one-line
error in a second, not an ``OverflowError`` traceback or a uvicorn exit after
the model has loaded; and handing the bound socket to uvicorn leaves no gap in
which another process could take the port.
"""

from __future__ import annotations

import errno
import socket

from tuneforge.errors import ConfigError


def check_port(port: object) -> int:
    """Return ``port`` if it is a TCP port number (0 lets the OS pick one), else raise.

    Raises:
        ConfigError: not an integer in 0-65535.

    Example:
        >>> check_port(8000)
        8000
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"--port {port!r}: expected a port number from 1 to 65535")
    return port


def bind(host: str, port: int) -> socket.socket:
    """Bind a listening TCP socket on ``host:port`` (as uvicorn would: SO_REUSEADDR, backlog 2048).

    Raises:
        ConfigError: invalid port, unknown host, port already in use, or no permission for it.
    """
    check_port(port)
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"--host {host!r}: not an address this machine can listen on ({exc})") from exc
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"--port {port}: {host}:{port} is already in use by another program; pick another port"
            ) from exc
        if exc.errno == errno.EACCES:
            raise ConfigError(f"--port {port}: no permission to listen on {host}:{port} (ports below 1024 need root)") from exc
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock
