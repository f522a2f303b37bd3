#!/usr/bin/env python3
"""Writers for the failover benchmark (bench/measurements/raft.sh).

  failover.py berth|etcd PID URL [CONFIG_DIGEST CONFIG_SIZE]

WRITERS (4) threads write without pause to URL, a member that is not the leader: berth,
small unique OCI manifests PUT by tag into bench/failover (over the config blob
CONFIG_DIGEST of CONFIG_SIZE bytes, already there); etcd, unique keys through its v3
JSON gateway. After 1.5 s of writing, the leader, process PID, is killed with SIGKILL.
The run ends with the first write sent after the kill that is acknowledged (berth: 201;
etcd: 200 without an error), or after 30 s.

Prints one line: "<seconds from the kill to that acknowledgement> <writes that failed
after the kill> <writes acknowledged before the kill>". A failed write is retried at
once: etcd answers writes with an error while it has no leader, berth holds them.
"""
import http.client
import json
import os
import signal
import sys
import threading
import time
import urllib.parse
import base64

WRITERS = 4
BEFORE_KILL = 1.5
GIVE_UP = 30.0


def main():
    kind, pid, url = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    config = sys.argv[4:6]
    target = urllib.parse.urlsplit(url)
    state = {"killed": None, "acked": None, "failed": 0, "before": 0}
    lock = threading.Lock()
    stop = threading.Event()

    def request(n):
        name = f"f{threading.get_ident() % 100000}-{n}-{time.time_ns()}"
        if kind == "etcd":
            key = base64.b64encode(f"bench/{name}".encode()).decode()
            value = base64.b64encode(b"v" * 300).decode()
            body = json.dumps({"key": key, "value": value}).encode()
            return "POST", "/v3/kv/put", {"Content-Type": "application/json"}, body
        digest, size = config
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest,
                "size": int(size),
            },
            "layers": [],
            "annotations": {"n": name},
        }
        headers = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
        return "PUT", f"/v2/bench/failover/manifests/{name}", headers, json.dumps(manifest).encode()

    def acknowledged(status, body):
        if kind == "etcd":
            return status == 200 and b'"error"' not in body
        return status == 201

    def writer():
        conn, n = None, 0
        while not stop.is_set():
            n += 1
            method, path, headers, body = request(n)
            sent = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(target.hostname, target.port, timeout=GIVE_UP)
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                ok = acknowledged(resp.status, resp.read())
            except (OSError, http.client.HTTPException):
                conn, ok = None, False
            done = time.monotonic()
            with lock:
                killed = state["killed"]
                if killed is None:
                    state["before"] += ok
                elif sent >= killed:
                    if ok:
                        if state["acked"] is None or done < state["acked"]:
                            state["acked"] = done
                        stop.set()
                    else:
                        state["failed"] += 1
            if not ok:
                time.sleep(0.005)

    threads = [threading.Thread(target=writer, daemon=True) for _ in range(WRITERS)]
    for t in threads:
        t.start()
    time.sleep(BEFORE_KILL)
    with lock:
        state["killed"] = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    stop.wait(GIVE_UP)
    stop.set()
    for t in threads:
        t.join(GIVE_UP)
    with lock:
        if state["acked"] is None:
            print(f"- {state['failed']} {state['before']}")
            return 1
        print(f"{state['acked'] - state['killed']:.3f} {state['failed']} {state['before']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
