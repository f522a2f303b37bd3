#!/usr/bin/env python3
"""One small image under many tags, for bench/measurements/ui.sh.

  tags.py fill URL REPO COUNT CLIENTS
      Uploads a config blob into REPO (POST a session, then PUT ?digest= with the
      bytes, as every registry accepts), then PUTs one OCI manifest (that config, no
      layers) under COUNT tags t00000, t00001, ... (zero-padded, so that they sort as
      they count) by CLIENTS threads over keep-alive connections. A request that fails
      on the connection is sent again on a new one, at most 3 times; any answer but 201
      stops the run. Prints "<tags> <seconds>".

  tags.py count URL REPO PAGES
      GET /v2/REPO/tags/list?n=1000, then the pages its Link headers name, at most
      PAGES requests; prints the number of distinct tags listed.
"""
import hashlib
import http.client
import json
import re
import sys
import threading
import time
import urllib.parse

CONFIG = json.dumps({"architecture": "amd64", "os": "linux",
                     "rootfs": {"type": "layers", "diff_ids": []}}).encode()
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ATTEMPTS = 3


def request(conn, host, method, target, body, headers):
    """One request on conn (a one-element list, replaced on a connection failure);
    returns the response, its bytes read into .body."""
    for attempt in range(ATTEMPTS):
        try:
            conn[0].request(method, target, body, headers)
            resp = conn[0].getresponse()
            resp.body = resp.read()
            return resp
        except (http.client.HTTPException, OSError):
            conn[0].close()
            conn[0] = http.client.HTTPConnection(host, timeout=60)
            if attempt == ATTEMPTS - 1:
                raise


def upload_config(host, repo):
    conn = [http.client.HTTPConnection(host, timeout=60)]
    resp = request(conn, host, "POST", f"/v2/{repo}/blobs/uploads/", b"", {"Content-Length": "0"})
    location = resp.getheader("Location", "")
    if resp.status != 202 or not location:
        sys.exit(f"config upload: POST answered {resp.status}")
    path = urllib.parse.urlsplit(location)
    target = path.path + ("?" + path.query if path.query else "")
    sep = "&" if "?" in target else "?"
    digest = "sha256:" + hashlib.sha256(CONFIG).hexdigest()
    resp = request(conn, host, "PUT", f"{target}{sep}digest={digest}", CONFIG,
                   {"Content-Type": "application/octet-stream"})
    if resp.status != 201:
        sys.exit(f"config upload: PUT answered {resp.status}")
    conn[0].close()
    return digest


def fill(url, repo, count, clients):
    host = urllib.parse.urlsplit(url).netloc
    start = time.time()
    digest = upload_config(host, repo)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": digest, "size": len(CONFIG)},
                           "layers": []}).encode()
    width = max(5, len(str(count - 1)))
    next_i = [0]
    lock = threading.Lock()
    failed = []

    def worker():
        conn = [http.client.HTTPConnection(host, timeout=60)]
        try:
            while not failed:
                with lock:
                    i = next_i[0]
                    next_i[0] += 1
                if i >= count:
                    return
                tag = f"t{i:0{width}d}"
                resp = request(conn, host, "PUT", f"/v2/{repo}/manifests/{tag}", manifest,
                               {"Content-Type": OCI_MANIFEST})
                if resp.status != 201:
                    failed.append(f"PUT manifest {tag}: {resp.status}")
                    return
        except (http.client.HTTPException, OSError) as e:
            failed.append(f"PUT manifest: {e!r}")
        finally:
            conn[0].close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        sys.exit(f"tagging failed: {failed[0]}")
    print(f"{count} {time.time() - start:.1f}")


def count_tags(url, repo, pages):
    host = urllib.parse.urlsplit(url).netloc
    conn = [http.client.HTTPConnection(host, timeout=60)]
    target = f"/v2/{repo}/tags/list?n=1000"
    tags = set()
    for _ in range(pages):
        resp = request(conn, host, "GET", target, None, {})
        if resp.status != 200:
            sys.exit(f"GET {target}: {resp.status}")
        tags.update(json.loads(resp.body).get("tags") or [])
        found = re.search(r"<([^>]*)>\s*;\s*rel=\"?next\"?", resp.getheader("Link", ""))
        if not found:
            print(len(tags))
            return
        target = found.group(1)
    sys.exit(f"GET {url}/v2/{repo}/tags/list: still more pages after {pages}")


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "fill":
        fill(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    elif len(sys.argv) == 5 and sys.argv[1] == "count":
        count_tags(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit(__doc__)
