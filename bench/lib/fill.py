#!/usr/bin/env python3
"""Fills a registry with small distinct blobs, for bench/measurements/metrics.sh.

  fill.py URL REPO COUNT CLIENTS [FIRST]

COUNT blobs of 64 bytes (each unique; numbered from FIRST, default 0, so that later
fills add new ones), uploaded into REPO by CLIENTS threads over
keep-alive connections: POST a session, then PUT ?digest= with the bytes, as every
registry accepts. Prints "<blobs> <seconds>".
"""
import hashlib
import http.client
import sys
import threading
import time
import urllib.parse

url, repo, count, clients = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
first = int(sys.argv[5]) if len(sys.argv) > 5 else 0
host = urllib.parse.urlsplit(url).netloc
next_i = [first]
lock = threading.Lock()
failed = []


def worker():
    conn = http.client.HTTPConnection(host, timeout=60)
    while not failed:
        with lock:
            i = next_i[0]
            next_i[0] += 1
        if i >= first + count:
            return
        body = (b"bench-metrics-%d-" % i).ljust(64, b".")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        conn.request("POST", f"/v2/{repo}/blobs/uploads/", b"", {"Content-Length": "0"})
        resp = conn.getresponse()
        resp.read()
        location = resp.getheader("Location", "")
        if resp.status != 202 or not location:
            failed.append(f"POST: {resp.status}")
            return
        sep = "&" if "?" in location else "?"
        path = urllib.parse.urlsplit(location)
        target = (path.path + ("?" + path.query if path.query else "")) + f"{sep}digest={digest}"
        conn.request("PUT", target, body, {"Content-Type": "application/octet-stream"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 201:
            failed.append(f"PUT: {resp.status}")
            return


start = time.time()
threads = [threading.Thread(target=worker) for _ in range(clients)]
for t in threads:
    t.start()
for t in threads:
    t.join()
if failed:
    sys.exit(f"upload failed: {failed[0]}")
print(f"{count} {time.time() - start:.1f}")
