#!/usr/bin/env python3
"""Load and timings for the metadata-at-scale benchmark (bench/measurements/scale.sh).

Tag i of the registry: one in ten goes to the big repository bench/big as t<i, 9
digits>; the others to repository bench/r<i // 10, 7 digits> as t<i % 10>. So N tags
make N / 10 small repositories, each with 9 tags, and one repository with N / 10.
Every tag names its own small OCI manifest over one config blob.

  scale.py load FROM TO CLIENTS CONFIG_DIGEST CONFIG_SIZE URL...
      Writes tags FROM..TO-1 (FROM and TO multiples of 10) by CLIENTS threads over
      keep-alive connections, repository by repository: the config blob is mounted
      from bench/big into the new repository, then its tags are PUT. Request j goes
      to URL j % len(URL). A request that fails on the connection is sent again on a
      new one, at most 3 times; an answer other than 201 stops the run. Prints
      "<requests> <seconds>".

  scale.py time TAGS REQUESTS URL...
      With TAGS tags loaded, REQUESTS GETs of each of: a catalog page
      (/v2/_catalog?n=100&last=<a random repository>) and a tag list page of the big
      repository (?n=100&last=<a random tag>), over keep-alive connections, round
      robin over the URLs. Every page must be 200 and hold 100 names (or what is
      left). Prints "<catalog p50 ms> <catalog p99 ms> <tags p50 ms> <tags p99 ms>".
"""
import http.client
import json
import random
import sys
import threading
import time
import urllib.parse

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ATTEMPTS = 3
PAGE = 100


class Conn:
    """A keep-alive connection to one of several nodes, reopened after a failure."""

    def __init__(self, url):
        self.netloc = urllib.parse.urlsplit(url).netloc
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        for attempt in range(ATTEMPTS):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.netloc, timeout=60)
                self.conn.request(method, path, body, headers or {})
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (OSError, http.client.HTTPException):
                self.conn = None
                if attempt == ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")


def small_repo(r):
    return f"bench/r{r:07d}"


def manifest(config_digest, config_size, name):
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": [],
        "annotations": {"n": name},
    }).encode()


def load(first, last, clients, config_digest, config_size, urls):
    repos = iter(range(first // 10, last // 10))
    lock = threading.Lock()
    failed, sent = [], [0]

    def worker(w):
        conns = [Conn(u) for u in urls]
        j = w
        while not failed:
            with lock:
                r = next(repos, None)
            if r is None:
                return
            repo = small_repo(r)
            writes = [("POST", f"/v2/{repo}/blobs/uploads/?mount={config_digest}&from=bench/big", b"",
                       {"Content-Length": "0"})]
            for k in range(10):
                i = r * 10 + k
                target = (f"/v2/bench/big/manifests/t{i:09d}" if k == 0
                          else f"/v2/{repo}/manifests/t{k}")
                body = manifest(config_digest, config_size, target)
                writes.append(("PUT", target, body, {"Content-Type": OCI_MANIFEST}))
            for method, path, body, headers in writes:
                status, text = conns[j % len(conns)].request(method, path, body, headers)
                j += 1
                if status != 201:
                    failed.append(f"{method} {path}: {status} {text[:200]!r}")
                    return
            with lock:
                sent[0] += len(writes)

    started = time.time()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        sys.exit(f"load failed: {failed[0]}")
    print(f"{sent[0]} {time.time() - started:.1f}")


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def timings(tags, requests, urls):
    conns = [Conn(u) for u in urls]
    repos = big = tags // 10
    rng = random.Random(tags)
    catalog, listing = [], []
    for j in range(requests):
        conn = conns[j % len(conns)]
        r, b = rng.randrange(repos), rng.randrange(big)
        pages = (
            (catalog, f"/v2/_catalog?n={PAGE}&last={small_repo(r)}", "repositories",
             min(PAGE, repos - 1 - r)),
            (listing, f"/v2/bench/big/tags/list?n={PAGE}&last=t{b * 10:09d}", "tags",
             min(PAGE, big - 1 - b)),
        )
        for samples, path, key, expected in pages:
            started = time.perf_counter()
            status, body = conn.request("GET", path)
            samples.append((time.perf_counter() - started) * 1000)
            names = (json.loads(body).get(key) or []) if status == 200 else None
            if names is None or len(names) != expected:
                sys.exit(f"GET {path}: {status}, {len(names or [])} names, want {expected}")
    print(" ".join(f"{percentile(s, p):.2f}" for s in (catalog, listing) for p in (50, 99)))


def main():
    command = sys.argv[1]
    if command == "load":
        first, last, clients = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
        load(first, last, clients, sys.argv[5], int(sys.argv[6]), sys.argv[7:])
    elif command == "time":
        timings(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
