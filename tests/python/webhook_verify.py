"""Checks dispatch's webhook deliveries with the Standard Webhooks reference library, as a
receiver would: each delivery (headers and body, from a JSON file) is verified, and one whose
id was seen before is refused as a replay. Prints one word per delivery: ok, replay, invalid.

usage: webhook_verify.py SECRET DELIVERIES.json
"""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main() -> int:
    secret, path = sys.argv[1], sys.argv[2]
    hook = Webhook(secret)
    seen = set()
    with open(path, encoding="utf-8") as f:
        deliveries = json.load(f)
    for d in deliveries:
        headers = {k.lower(): v for k, v in d["headers"].items()}
        try:
            hook.verify(d["body"], headers)
        except WebhookVerificationError as e:
            print(f"invalid ({e})")
            continue
        msg_id = headers["webhook-id"]
        if msg_id in seen:
            print("replay")
            continue
        seen.add(msg_id)
        print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
