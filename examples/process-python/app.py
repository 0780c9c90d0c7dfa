"""A process function in Python, standard library only.

Nimbus starts `python3 app.py` with PORT set and proxies requests to it.
GET /python/count/{name} counts visits in the KV bucket "counts" through
the platform API (NIMBUS_API, NIMBUS_TOKEN), as a wasm function would with
its kv host functions: the manifest grants kv:counts and nothing else.
GET /python/sleep/{ms} answers after ms milliseconds (at most 10 s): a
function that takes a while, to see requests wait for a busy instance.
"""
import http.server
import json
import os
import sys
import time
import urllib.error
import urllib.request

API = os.environ.get("NIMBUS_API", "")
TOKEN = os.environ.get("NIMBUS_TOKEN", "")


def platform(method, path, invocation, body=None):
    """Calls the platform API; returns (status, body bytes)."""
    req = urllib.request.Request(API + path, data=body, method=method, headers={
        "Authorization": "Bearer " + TOKEN,
        # Ties the call to the invocation: denials land in its log.
        "X-Nimbus-Invocation-Id": invocation,
    })
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        invocation = self.headers.get("X-Nimbus-Invocation-Id", "")
        if self.path.startswith("/python/count/") or self.path.startswith("/python/kv/"):
            return self.count(invocation)
        if self.path.startswith("/python/sleep/"):
            ms = self.path.split("?")[0].split("/")[3]
            time.sleep(min(int(ms) if ms.isdigit() else 0, 10000) / 1000)
        body = json.dumps({
            "runtime": "python",
            "greeting": os.environ.get("GREETING", ""),
            "path": self.path,
            "invocation": invocation,
        }).encode()
        self.answer(200, body)

    def count(self, invocation):
        # /python/count/{name} uses the granted bucket; /python/kv/{bucket}/{key}
        # shows what an ungranted one answers (403).
        parts = self.path.split("?")[0].split("/")
        bucket, key = ("counts", parts[3]) if parts[2] == "count" else (parts[3], parts[4])
        status, value = platform("GET", f"/kv/{bucket}/{key}", invocation)
        if status == 404:
            value = b"0"
        elif status != 200:
            return self.answer(status, value)
        n = int(value) + 1
        status, out = platform("PUT", f"/kv/{bucket}/{key}", invocation, str(n).encode())
        if status != 200:
            return self.answer(status, out)
        self.answer(200, json.dumps({"name": key, "count": n}).encode())

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass  # one line per request would cost more than the request


http.server.ThreadingHTTPServer(("", int(os.environ["PORT"])), Handler).serve_forever()
