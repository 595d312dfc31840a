"""ports.py — free loopback ports for the black-box suite's processes and servers.

`make test` runs the suite on several pytest-xdist workers (processes). A port is found free
by binding port 0 and closing the socket; the process under test binds it a moment later. So
that no other worker can be handed the same port in that moment, each worker takes only the
ports p with (p >> 1) % workers == its index (gw0, gw1, ...; Linux hands out even ports for
bind(port 0), keeping odd ones for connect, hence the shift); without xdist every port qualifies.

    free_port(taken=set())   # -> int, not in taken; the caller records it if it must
"""

import os
import socket


def worker_slot():
    """(index, count) of this pytest-xdist worker; (0, 1) outside xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    try:
        count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    except ValueError:
        count = 1
    if count <= 1 or not name.startswith("gw") or not name[2:].isdigit():
        return 0, 1
    return int(name[2:]) % count, count


def free_port(taken=frozenset()):
    """A TCP port on 127.0.0.1 that nothing listens on right now, in this worker's share of
    the ports and not in taken."""
    index, count = worker_slot()
    for _ in range(100 * count):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if (port >> 1) % count == index and port not in taken:
            return port
    raise RuntimeError("no free port found")
