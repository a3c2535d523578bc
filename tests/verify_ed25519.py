"""Checks Hookline's `v1a` (ed25519) signatures with the `cryptography` package, an
implementation independent of the one that signs.

Reads a JSON list of cases {public_key, headers, body, valid}: a case is valid when one
`v1a,` signature of the `webhook-signature` header verifies with the `whpk_` key over
`{webhook-id}.{webhook-timestamp}.{body}`. Exits non-zero if any verdict differs.
"""
import base64
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def verifies(public_key: str, headers: dict, body: str) -> bool:
    assert public_key.startswith("whpk_"), public_key
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key[len("whpk_"):]))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.{body}".encode()
    for part in headers["webhook-signature"].split(" "):
        version, _, signature = part.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(base64.b64decode(signature), signed)
            return True
        except InvalidSignature:
            pass
    return False


def main(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        cases = json.load(f)
    failures = 0
    for i, case in enumerate(cases):
        verdict = verifies(case["public_key"], case["headers"], case["body"])
        if verdict != case["valid"]:
            failures += 1
            print(f"case {i}: expected valid={case['valid']}, cryptography said {verdict}")
    print(f"{len(cases)} cases checked, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
