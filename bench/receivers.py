"""Real loopback receivers for SIEM outputs: an HTTP server and syslog
listeners (UDP, TCP, TLS) that record the exact bytes they get.

Used by the output tests (``tests/fixtures/receivers.py`` wraps them in
fixtures) and by ``bench/bench_outputs.py``. Each receiver runs in a thread on
127.0.0.1 and can be stopped and started again on the same port (outages).
"""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Optional

__all__ = ["Captured", "HttpReceiver", "SyslogReceiver", "TlsCerts", "split_octet_counted"]


@dataclass
class Captured:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    received_at: float = field(default_factory=time.time)


def _serve(server: socketserver.BaseServer) -> int:
    """Serve in a daemon thread; the bound port."""
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server.server_address[1]  # type: ignore[attr-defined]


def _shut(server: Optional[socketserver.BaseServer]) -> None:
    """Stop serving and close the listening socket (None: nothing to stop)."""
    if server is not None:
        server.shutdown()
        server.server_close()
    return None


Responder = Callable[[Captured], "tuple[int, dict[str, str], bytes]"]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def send_reply(handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes) -> None:
    """Answer from an http.server handler with headers and body in one write (two
    small writes meet delayed ACK, ~40 ms each)."""
    handler.send_response(status)
    for k, v in headers.items():
        handler.send_header(k, v)
    handler.send_header("content-length", str(len(body)))
    handler._headers_buffer.append(b"\r\n")  # type: ignore[attr-defined]
    handler.wfile.write(b"".join(handler._headers_buffer) + body)  # type: ignore[attr-defined]
    handler._headers_buffer = []  # type: ignore[attr-defined]


class HttpReceiver:
    """Records every request; answers with ``responder(request)`` (default 200 ``{}``).

    ``requests`` holds what was answered 2xx *and* what was not: check
    ``status_log`` for what each got.
    """

    def __init__(self, responder: Optional[Responder] = None, tls: Optional["TlsCerts"] = None):
        self.responder: Responder = responder or (lambda req: (200, {"content-type": "application/json"}, b"{}"))
        self.requests: list[Captured] = []
        self.status_log: list[int] = []
        self.tls = tls
        self.port = 0
        self._server: Optional[_Server] = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> "HttpReceiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                req = Captured(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                status, headers, reply = receiver.responder(req)
                with receiver._lock:
                    receiver.requests.append(req)
                    receiver.status_log.append(status)
                send_reply(self, status, headers, reply)

            do_POST = do_PUT = do_GET = _handle

        self._server = _Server(("127.0.0.1", self.port), Handler)
        if self.tls is not None:
            self._server.socket = self.tls.server_context().wrap_socket(self._server.socket, server_side=True)
        self.port = _serve(self._server)
        return self

    def stop(self) -> None:
        self._server = _shut(self._server)

    def ok_requests(self) -> list[Captured]:
        with self._lock:
            return [r for r, s in zip(self.requests, self.status_log) if 200 <= s < 300]


def split_octet_counted(data: bytes) -> list[bytes]:
    """Frames of an RFC 6587 octet-counted stream (``LEN SP MSG``...); raises on bad framing."""
    frames = []
    i = 0
    while i < len(data):
        space = data.index(b" ", i)
        length = int(data[i:space].decode("ascii"))
        start = space + 1
        frame = data[start : start + length]
        if len(frame) != length:
            raise ValueError(f"truncated frame at byte {i}: want {length}, have {len(frame)}")
        frames.append(frame)
        i = start + length
    return frames


class SyslogReceiver:
    """A syslog listener. ``kind`` is ``udp`` (``messages`` = datagrams), ``tcp``
    or ``tls`` (``streams`` = raw bytes per connection; ``messages`` = their
    octet-counted frames)."""

    def __init__(self, kind: str, tls: Optional["TlsCerts"] = None):
        if kind not in ("udp", "tcp", "tls"):
            raise ValueError(kind)
        if kind == "tls" and tls is None:
            raise ValueError("tls receiver needs certs")
        self.kind = kind
        self.tls = tls
        self.port = 0
        self.datagrams: list[bytes] = []
        self.streams: list[bytearray] = []
        self._connections: list[socket.socket] = []
        self._server: Optional[socketserver.BaseServer] = None
        self._lock = threading.Lock()

    @property
    def messages(self) -> list[bytes]:
        with self._lock:
            if self.kind == "udp":
                return list(self.datagrams)
            out: list[bytes] = []
            for stream in self.streams:
                out.extend(split_octet_counted(bytes(stream)))
            return out

    def start(self) -> "SyslogReceiver":
        receiver = self
        if self.kind == "udp":

            class UdpHandler(socketserver.BaseRequestHandler):
                def handle(self) -> None:
                    with receiver._lock:
                        receiver.datagrams.append(self.request[0])

            class Udp(socketserver.ThreadingUDPServer):
                allow_reuse_address = True
                max_packet_size = 65535

            self._server = Udp(("127.0.0.1", self.port), UdpHandler)
        else:

            class TcpHandler(socketserver.BaseRequestHandler):
                def handle(self) -> None:
                    sock = self.request
                    if receiver.tls is not None:
                        try:
                            sock = receiver.tls.server_context().wrap_socket(sock, server_side=True)
                        except (ssl.SSLError, OSError):
                            return
                    buf = bytearray()
                    with receiver._lock:
                        receiver.streams.append(buf)
                    try:
                        while True:
                            try:
                                chunk = sock.recv(65536)
                            except (ssl.SSLError, OSError):
                                return
                            if not chunk:
                                return
                            with receiver._lock:
                                buf.extend(chunk)
                    finally:
                        if sock is not self.request:
                            sock.close()

            class Tcp(socketserver.ThreadingTCPServer):
                allow_reuse_address = True
                daemon_threads = True

                def process_request(self, request: socket.socket, client_address: object) -> None:
                    # recorded in the accept thread, so stop() drops even a just-accepted one
                    with receiver._lock:
                        receiver._connections.append(request.dup())
                    super().process_request(request, client_address)

            self._server = Tcp(("127.0.0.1", self.port), TcpHandler)
        self.port = _serve(self._server)
        return self

    def stop(self) -> None:
        """Stop listening and drop open connections, as a receiver restart does."""
        self._server = _shut(self._server)
        with self._lock:
            connections, self._connections = self._connections, []
        for sock in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


@dataclass
class TlsCerts:
    ca_file: Path
    cert_file: Path
    key_file: Path
    #: when set, the server demands a client certificate signed by this CA (mutual TLS)
    client_ca_file: Optional[Path] = None

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        if self.client_ca_file is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(str(self.client_ca_file))
        return ctx
