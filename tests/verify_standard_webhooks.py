"""Checks Hookline deliveries with the official Standard Webhooks library.

Reads a JSON list of cases {secret, headers, body, valid} and exits non-zero if the
library's verdict differs from the expected one for any case.
"""
import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        cases = json.load(f)
    failures = 0
    for i, case in enumerate(cases):
        wh = Webhook(case["secret"])
        try:
            wh.verify(case["body"], case["headers"])
            verdict = True
        except WebhookVerificationError as e:
            verdict = False
            reason = str(e)
        if verdict != case["valid"]:
            failures += 1
            print(f"case {i}: expected valid={case['valid']}, library said {verdict}"
                  + ("" if verdict else f" ({reason})"))
    print(f"{len(cases)} cases checked, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
