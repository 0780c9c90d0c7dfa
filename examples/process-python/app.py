"""A process function in Python, standard library only.

Nimbus starts `python3 app.py` with PORT set and proxies requests to it.
"""
import http.server
import json
import os
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        # Lines on stdout/stderr go to the invocation's log.
        print("python handling", self.path, flush=True)
        body = json.dumps({
            "runtime": "python",
            "greeting": os.environ.get("GREETING", ""),
            "path": self.path,
            "invocation": self.headers.get("X-Nimbus-Invocation-Id", ""),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        sys.stderr.write("access: " + (fmt % args) + "\n")


http.server.ThreadingHTTPServer(("", int(os.environ["PORT"])), Handler).serve_forever()
