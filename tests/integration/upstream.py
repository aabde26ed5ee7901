"""A trivial upstream for the proxy's tests: answers every POST with one status and logs the
`x-request-id` it was given, one per line. Run as `python upstream.py PORT STATUS LOG`."""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    port, status, log = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    out = open(log, "a", buffering=1)  # noqa: SIM115 - open for the server's lifetime

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go as two writes

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            out.write(f"{self.headers.get('x-request-id')}\n")
            body = b'{"ok": true}'
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
