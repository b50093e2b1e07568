"""Verifies a callback with the Standard Webhooks reference library, as an app receiving it would.

Usage: verify_webhook.py SECRET PAYLOAD_FILE HEADERS_JSON_FILE. Prints the verified payload (JSON) and exits 0,
or exits 1 with the library's reason.
"""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

secret, payload_file, headers_file = sys.argv[1:4]
with open(payload_file, "rb") as f:
    payload = f.read()
with open(headers_file) as f:
    headers = json.load(f)
try:
    print(json.dumps(Webhook(secret).verify(payload, headers)))
except WebhookVerificationError as error:
    print(f"not verified: {error}", file=sys.stderr)
    sys.exit(1)
