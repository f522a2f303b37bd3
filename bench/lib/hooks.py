#!/usr/bin/env python3
"""Load and a receiver for the webhook benchmark (bench/measurements/webhooks.sh).

  hooks.py receive PORT OUT
      An HTTP receiver: for every push event it gets (Distribution's envelope or
      Docker Hub's form), one line "<tag> <arrival, unix seconds>" in OUT. Answers 200.

  hooks.py push OUT REPO CONFIG_DIGEST CONFIG_SIZE COUNT CLIENTS RATE URL...
      COUNT pushes of small unique manifests (over one config blob already in REPO)
      as tags p<i>, by CLIENTS threads over keep-alive connections, push i to URL
      i % len(URLs); at most RATE pushes a second overall (0: as fast as they go).
      One line "<tag> <time of the 201>" per push in OUT; the last line of stdout
      is "<pushes> <seconds>". A push that is not answered 201 stops the run.

  hooks.py latency PUSHED RECEIVED
      "<p50 ms> <p99 ms> <events matched>": from each push's 201 (when the client
      has read it) to its event's first arrival, 0 when the event came first.

  hooks.py throughput RECEIVED
      "<events a second> <events>": distinct events over the time from the first
      arrival to the last.
"""
import http.client
import json
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def receive(port, out):
    sink = open(out, "a", buffering=1)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            now = time.time()
            lines = []
            payload = json.loads(body)
            for event in payload.get("events", []):
                tag = event.get("target", {}).get("tag", "")
                if event.get("action") == "push" and tag:
                    lines.append(f"{tag} {now:.6f}\n")
            # Docker Hub's form: one push per request.
            tag = (payload.get("push_data") or {}).get("tag", "")
            if tag:
                lines.append(f"{tag} {now:.6f}\n")
            with lock:
                sink.write("".join(lines))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def push(out, repo, config_digest, config_size, count, clients, rate, urls):
    config = {"mediaType": "application/vnd.oci.image.config.v1+json",
              "digest": config_digest, "size": config_size}
    times = [None] * count
    next_i = [0]
    lock = threading.Lock()
    failed = []
    start = time.time()

    def take():
        with lock:
            i = next_i[0]
            next_i[0] += 1
        if i >= count or failed:
            return None
        if rate > 0:
            due = start + i / rate
            pause = due - time.time()
            if pause > 0:
                time.sleep(pause)
        return i

    def client():
        conns = {}
        while (i := take()) is not None:
            url = urllib.parse.urlsplit(urls[i % len(urls)])
            conn = conns.get(url.netloc)
            if conn is None:
                conn = conns[url.netloc] = http.client.HTTPConnection(url.netloc, timeout=30)
            body = json.dumps({"schemaVersion": 2,
                               "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": config, "layers": [],
                               "annotations": {"n": str(i), "at": str(start)}}).encode()
            conn.request("PUT", f"/v2/{repo}/manifests/p{i}", body,
                         {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
            resp = conn.getresponse()
            resp.read()
            if resp.status != 201:
                failed.append(f"p{i}: {resp.status}")
                return
            times[i] = time.time()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - start
    if failed:
        sys.exit(f"push failed: {failed[0]}")
    with open(out, "w") as f:
        for i, t in enumerate(times):
            f.write(f"p{i} {t:.6f}\n")
    print(f"{count} {elapsed:.3f}")


def read_times(path):
    first = {}
    for line in open(path):
        tag, t = line.split()
        first.setdefault(tag, float(t))
    return first


def latency(pushed, received):
    sent, got = read_times(pushed), read_times(received)
    # The receiver can hear of a push before the pushing client has read its
    # 201: that counts as no wait.
    waits = sorted(max(0.0, got[tag] - t) * 1000 for tag, t in sent.items() if tag in got)
    if not waits:
        print("- - 0")
        return
    pick = lambda q: waits[min(len(waits) - 1, int(q * len(waits)))]
    print(f"{pick(0.5):.2f} {pick(0.99):.2f} {len(waits)}")


def throughput(received):
    got = read_times(received)
    if len(got) < 2:
        print("- 0")
        return
    span = max(got.values()) - min(got.values())
    print(f"{len(got) / span:.1f} {len(got)}")


if __name__ == "__main__":
    if sys.argv[1] == "receive":
        receive(int(sys.argv[2]), sys.argv[3])
    elif sys.argv[1] == "push":
        out, repo, digest, size, count, clients, rate = sys.argv[2:9]
        push(out, repo, digest, int(size), int(count), int(clients), float(rate), sys.argv[9:])
    elif sys.argv[1] == "latency":
        latency(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "throughput":
        throughput(sys.argv[2])
    else:
        sys.exit(__doc__)
