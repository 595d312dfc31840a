"""faultproxy.py — a fault-injecting HTTP/1.1 proxy of the project's own, for the chaos suite
(test_chaos.py). This kernel has no netem and Debian has no toxiproxy (../shared/INFRA.md), so
faults come from this proxy sitting between the gateway and one service instance:

    p = FaultProxy(upstream_port)            # listens on p.port, forwards to 127.0.0.1:upstream
    p.set(latency_ms=200)                    # every response head delayed
    p.set(fail_ratio=0.5)                    # half the requests answered with a bare 503
    p.set(fail_ratio=1.0, fail_count=20)     # a burst: the next 20 requests 503
    p.set(reset_ratio=0.3)                   # 30% of requests: connection reset, nothing sent on
    p.set(blackhole=True)                    # requests taken and never answered
    p.set(slow_body_ms=20)                   # response bodies dribble, 64 bytes per 20 ms
    p.set()                                  # back to passing everything
    p.requests, p.posts                      # what reached the proxy (attempts), POST bodies
    p.close()

It speaks HTTP/1.1 per request (heads, Content-Length and chunked bodies both ways) so a fault
hits single requests on kept-alive connections, as real ones do; one upstream connection per
client connection. Everything runs on one asyncio loop in a daemon thread; the counters are
read under a lock.
"""

import asyncio
import random
import socket
import struct
import threading


class _Conn:
    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer


async def _read_body(reader, head, out):
    """Reads the body framed by head (request or response) from reader, appending the raw
    bytes to out (a bytearray). Returns False when the body runs to the connection's close."""
    low = head.lower()
    if b"\r\ntransfer-encoding: chunked" in low:
        while True:
            line = await reader.readuntil(b"\r\n")
            out += line
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:
                    t = await reader.readuntil(b"\r\n")
                    out += t
                    if t == b"\r\n":
                        return True
            out += await reader.readexactly(size + 2)
    i = low.find(b"\r\ncontent-length:")
    if i >= 0:
        n = int(low[i + 17:low.index(b"\r\n", i + 2)].strip())
        out += await reader.readexactly(n)
        return True
    return None  # no framing: no body (requests) or until close (responses)


class FaultProxy:
    def __init__(self, upstream_port, upstream_host="127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.lock = threading.Lock()
        self.requests = 0
        self.posts = []  # bodies of the POSTs forwarded upstream
        self.faults = 0
        self._cfg = {}
        self._rng = random.Random(12)
        self._conns = set()
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(5)

    # ---- control (any thread) -----------------------------------------------------------

    def set(self, latency_ms=0, fail_ratio=0.0, fail_count=None, reset_ratio=0.0,
            blackhole=False, slow_body_ms=0):
        with self.lock:
            self._cfg = {"latency_ms": latency_ms, "fail_ratio": fail_ratio,
                         "fail_count": fail_count, "reset_ratio": reset_ratio,
                         "blackhole": blackhole, "slow_body_ms": slow_body_ms}

    def retarget(self, upstream_port):
        with self.lock:
            self.upstream = (self.upstream[0], upstream_port)

    def stats(self):
        with self.lock:
            return {"requests": self.requests, "faults": self.faults, "posts": list(self.posts)}

    def close(self):
        async def shutdown():
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    # ---- the loop --------------------------------------------------------------------------

    def _run(self, ready):
        asyncio.set_event_loop(self._loop)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, sock=sock))
        ready.set()
        self._loop.run_forever()

    def _decide(self):
        with self.lock:
            self.requests += 1
            c = dict(self._cfg)
            if c.get("blackhole"):
                self.faults += 1
                return "blackhole", c
            if c.get("reset_ratio") and self._rng.random() < c["reset_ratio"]:
                self.faults += 1
                return "reset", c
            if c.get("fail_ratio") and self._rng.random() < c["fail_ratio"]:
                if c.get("fail_count") is not None:
                    if self._cfg["fail_count"] <= 0:
                        return "pass", c
                    self._cfg["fail_count"] -= 1
                self.faults += 1
                return "503", c
            return "pass", c

    @staticmethod
    def _reset(writer):
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()

    async def _serve(self, reader, writer):
        self._conns.add(writer)
        up = None
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                body = bytearray()
                await _read_body(reader, head, body)
                fault, cfg = self._decide()
                if fault == "reset":
                    self._reset(writer)
                    return
                if fault == "blackhole":
                    while not reader.at_eof():  # hold the connection, answer nothing
                        if not await reader.read(65536):
                            break
                    return
                if fault == "503":
                    writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                 b"Content-Type: text/plain\r\n\r\n")
                    await writer.drain()
                    continue
                if head.startswith(b"POST "):
                    with self.lock:
                        self.posts.append(bytes(body))
                if up is None:
                    try:
                        up = _Conn(*await asyncio.open_connection(*self.upstream))
                    except OSError:
                        self._reset(writer)  # as a dead instance: refused → reset
                        return
                up.writer.write(head + bytes(body))
                await up.writer.drain()
                try:
                    rhead = await up.reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    self._reset(writer)
                    return
                if cfg.get("latency_ms"):
                    await asyncio.sleep(cfg["latency_ms"] / 1000)
                rbody = bytearray()
                framed = await _read_body(up.reader, rhead, rbody) \
                    if not head.startswith(b"HEAD ") else True
                if framed is None:  # until close
                    rbody += await up.reader.read()
                writer.write(rhead)
                if cfg.get("slow_body_ms") and rbody:
                    for i in range(0, len(rbody), 64):
                        writer.write(bytes(rbody[i:i + 64]))
                        await writer.drain()
                        await asyncio.sleep(cfg["slow_body_ms"] / 1000)
                else:
                    writer.write(bytes(rbody))
                await writer.drain()
                if framed is None or b"\r\nconnection: close" in rhead.lower():
                    return
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            return
        finally:
            self._conns.discard(writer)
            if up is not None:
                up.writer.close()
            writer.close()


class TcpCut:
    """A byte-level TCP relay to 127.0.0.1:upstream_port for protocols that are not HTTP
    (Redis's RESP): one client's own network path, which the test can cut.

        t = TcpCut(redis_port)   # listens on t.port
        t.cut()                  # nothing relayed any more, either way, on every connection,
                                 # new ones included (taken, never answered): the client's
                                 # commands time out as behind a broken path
        t.heal()                 # the cut connections are closed; new ones relay again
        t.close()

    One thread accepts; each connection has one thread relaying both ways with select()."""

    def __init__(self, upstream_port, upstream_host="127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self._lock = threading.Lock()
        self._cut = False
        self._conns = []  # [client socket, upstream socket or None]
        self._closed = False
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self):
        with self._lock:
            self._cut = True

    def heal(self):
        with self._lock:
            self._cut = False
            dead, self._conns = self._conns, []
        for pair in dead:
            for s in pair:
                if s is not None:
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

    def close(self):
        self._closed = True
        try:
            self._sock.close()
        except OSError:
            pass
        self.heal()

    def _accept(self):
        while not self._closed:
            try:
                c, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(c,), daemon=True).start()

    def _relay(self, c):
        import select
        with self._lock:
            cut = self._cut
        u = None
        if not cut:
            try:
                u = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                c.close()
                return
        pair = [c, u]
        dead = cut  # once a byte was dropped, this connection's stream is broken for good
        with self._lock:
            self._conns.append(pair)
        try:
            while True:
                r, _, _ = select.select([s for s in pair if s is not None], [], [], 0.2)
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    with self._lock:
                        dead = dead or self._cut
                    if not dead:
                        (u if s is c else c).sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for s in pair:
                if s is not None:
                    s.close()
