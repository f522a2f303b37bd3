#!/usr/bin/env python3
"""Checks what receiver.py recorded for one endpoint.

Usage: check.py SCHEMA FILE

Every body must validate against SCHEMA (a JSON schema), and every request
must carry a signature the receiver verified, whose check failed on a
tampered body. Prints the number of requests checked.
"""
import json
import sys

import jsonschema

schema = json.load(open(sys.argv[1]))
validator = jsonschema.Draft7Validator(schema)
count = 0
for line in open(sys.argv[2]):
    record = json.loads(line)
    errors = sorted(validator.iter_errors(record["body"]), key=lambda e: list(e.path))
    for e in errors:
        print(f"{sys.argv[2]}: {'/'.join(map(str, e.path))}: {e.message}", file=sys.stderr)
    if errors:
        sys.exit(1)
    if not record["signature_ok"] or not record["tamper_caught"]:
        print(f"{sys.argv[2]}: signature check failed: {record['headers']}", file=sys.stderr)
        sys.exit(1)
    count += 1
print(count)
