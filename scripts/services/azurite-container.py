#!/usr/bin/env python3
"""Creates a blob container in Azurite (the Azure Storage emulator) with a SharedKey-signed
REST call, using only the standard library.

    python3 scripts/services/azurite-container.py NAME [--endpoint http://127.0.0.1:10000]

Exits 0 when the container exists afterwards (created now, or already there).
"""
import argparse
import base64
import hashlib
import hmac
import sys
import urllib.error
import urllib.request
from email.utils import formatdate

ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented by Microsoft).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
VERSION = "2023-11-03"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("--endpoint", default="http://127.0.0.1:10000")
    args = ap.parse_args()
    date = formatdate(usegmt=True)
    # Shared Key string to sign: verb, eleven empty standard headers, the x-ms headers, and the
    # canonical resource (account, then the path, which starts with the account again).
    string_to_sign = (
        "PUT\n" + "\n" * 11
        + f"x-ms-date:{date}\nx-ms-version:{VERSION}\n"
        + f"/{ACCOUNT}/{ACCOUNT}/{args.name}\nrestype:container"
    )
    signature = base64.b64encode(
        hmac.new(base64.b64decode(KEY), string_to_sign.encode(), hashlib.sha256).digest()
    ).decode()
    req = urllib.request.Request(
        f"{args.endpoint}/{ACCOUNT}/{args.name}?restype=container",
        method="PUT",
        # No body: urllib would add a Content-Type, which the signature would have to cover.
        data=None,
        headers={
            "x-ms-date": date,
            "x-ms-version": VERSION,
            "Authorization": f"SharedKey {ACCOUNT}:{signature}",
            "Content-Length": "0",
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            print(f"created container {args.name} ({r.status})")
    except urllib.error.HTTPError as e:
        if e.code == 409:
            print(f"container {args.name} already exists")
            return 0
        print(f"error: creating container {args.name}: HTTP {e.code}: {e.read()[:300]!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
