"""What the carrier and WooCommerce sandboxes share: a threaded loopback server that counts requests,
failure switches every carrier sandbox honours, and real (small) label documents."""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HANG_SECONDS = 30.0
"""How long a "hang" lasts at most (stop() releases it at once): longer than any client read timeout."""


class Server(ThreadingHTTPServer):
    """A thread per connection. The listen backlog is socketserver's 5 by default: 32 clients
    connecting at once (a benchmark, a burst of label purchases) would be refused."""

    request_queue_size = 128
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-answer (a load generator stopping) is not the sandbox's error."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


@dataclass
class Reply:
    status: int
    body: Any
    content_type: str = "application/json"
    headers: dict[str, str] | None = None


class Drop(Exception):
    """Close the connection without answering (the answer "never arrives")."""


@dataclass
class Faults:
    """Switches a test flips; each carrier sandbox checks them on every API call (not token calls)."""

    server_error: int = 0
    """Answer the next N calls with the carrier's 5xx envelope (-1: every call)."""
    hang: bool = False
    """Accept the call and never answer (until stop())."""
    delay: float = 0.0
    """Answer after this many seconds."""
    refuse_void: bool = False
    """Refuse cancellation (the shipment was already tendered to the carrier)."""
    reject_address: bool = False
    """Refuse the recipient's address the carrier's way."""
    sell_then_drop: bool = False
    """Sell the label (remembered per reference), then drop the connection without an answer."""
    sell_then_hang: bool = False
    """Sell the label, then hang until the client's read timeout."""


class LoopbackServer:
    """Base of the sandboxes: start()/stop()/url as the Shopify fake does; subclasses implement handle()."""

    def __init__(self) -> None:
        self.faults = Faults()
        self.requests: list[tuple[str, str]] = []
        """(method, path) of every request received, in order (proves "nothing reached the carrier")."""
        self._server: Server | None = None
        self._released = threading.Event()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def api_calls(self, prefix: str = "") -> int:
        return sum(1 for _, path in self.requests if path.startswith(prefix))

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        raise NotImplementedError

    def take_server_error(self) -> bool:
        """Whether this call answers 5xx (consumes one of the next-N switch)."""
        with self._lock:
            if self.faults.server_error == 0:
                return False
            if self.faults.server_error > 0:
                self.faults.server_error -= 1
            return True

    def stall(self) -> None:
        """Hang (bounded), for timeouts: released at once by stop()."""
        self._released.wait(HANG_SECONDS)

    def start(self, port: int = 0) -> LoopbackServer:
        """Serve on 127.0.0.1:`port` (0: a free one). OSError if that port is taken."""
        sandbox = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without TCP_NODELAY the second waits for the
            # client's delayed ACK (~40 ms a request on keep-alive connections).
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                sandbox.requests.append((self.command, self.path))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    reply = sandbox.handle(self.command, self.path, headers, body)
                except Drop:
                    self.close_connection = True
                    return
                raw = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(raw)))
                for name, value in (reply.headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        self._released.clear()
        self._server = Server(("127.0.0.1", port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def wait(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


def pdf_label(lines: list[str]) -> bytes:
    """A real one-page 4x6 in PDF (valid xref, Helvetica text): what a printer or a viewer accepts."""
    text = " ".join(
        f"BT /F1 {18 if n == 0 else 12} Tf 20 {400 - 30 * n} Td ({_pdf_escape(line)}) Tj ET"
        for n, line in enumerate(lines)
    )
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 288 432] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(text), text.encode("latin-1")),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (n, obj)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def _pdf_escape(text: str) -> str:
    return (
        text.replace("\\", "\\\\")
        .replace("(", "\\(")
        .replace(")", "\\)")
        .encode("latin-1", "replace")
        .decode("latin-1")
    )


def zpl_label(lines: list[str], barcode: str) -> bytes:
    """A ZPL II label: text lines and a Code 128 barcode of the tracking number."""
    fields = "".join(
        f"^FO40,{40 + 50 * n}^A0N,{40 if n == 0 else 28},{40 if n == 0 else 28}^FD{line}^FS"
        for n, line in enumerate(lines)
    )
    return f"^XA^CI28{fields}^FO40,{80 + 50 * len(lines)}^BY3^BCN,160,Y,N,N^FD{barcode}^FS^XZ".encode()
