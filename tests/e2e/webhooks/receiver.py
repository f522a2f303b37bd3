#!/usr/bin/env python3
"""A webhook receiver for the end-to-end tests.

Usage: receiver.py PORT SECRET OUT_DIR

Records every POST as one JSON line in OUT_DIR/<first path segment>.jsonl:
{"path", "headers", "body", "signature_ok", "tamper_caught"}. The signature
is checked as docs/webhooks.md tells receivers to: HMAC-SHA256 over
"<t>.<body>" with the shared secret, compared in constant time, and the
check is run once more on a tampered copy of the body, which must fail.
"""
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, SECRET, OUT = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3]


def verify(header, body, secret, tolerance=300):
    fields = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    t, sig = fields.get("t", ""), fields.get("v1", "")
    if not t.isdigit() or abs(time.time() - int(t)) > tolerance:
        return False
    mac = hmac.new(secret, t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(mac, sig)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        header = self.headers.get("Berth-Signature", "")
        record = {
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": json.loads(body),
            "signature_ok": verify(header, body, SECRET),
            "tamper_caught": not verify(header, body.replace(b"e", b"f", 1), SECRET),
        }
        name = self.path.strip("/").split("/")[0] or "root"
        with open(os.path.join(OUT, name + ".jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
