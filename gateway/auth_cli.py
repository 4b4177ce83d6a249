"""``lmforge-gateway hash-key``: the SHA-256 to put in ``auth.keys[].sha256`` for an API key."""

from __future__ import annotations

import argparse
import secrets
import sys

from gateway.auth import hash_key


def _run(args: argparse.Namespace) -> int:
    if args.generate:
        key = "lmf_" + secrets.token_urlsafe(32)
        print(f"key:    {key}")
        print(f"sha256: {hash_key(key)}")
        return 0
    key = sys.stdin.readline().rstrip("\r\n") if args.key is None else args.key
    if not key:
        print("no key given (pass it on stdin, or --generate a new one)", file=sys.stderr)
        return 2
    print(hash_key(key))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "hash-key",
        help="print the sha256 of an API key for the gateway config (auth.keys[].sha256)",
        description="Reads an API key from stdin (one line) and prints its hex SHA-256, the "
        "form the gateway config stores. --generate makes a new random key and prints both.",
    )
    parser.add_argument("--generate", action="store_true", help="make a new random key")
    parser.add_argument(
        "--key", default=None, help="the key itself (visible in the process list: prefer stdin)"
    )
    parser.set_defaults(handler=_run)
