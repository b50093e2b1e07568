"""Prints the messages of a Maildir (the SMTP sink's) as JSON: to, subject, and the body as plain text.

Used by the end-to-end tests, which read what Directus e-mailed:  python tests/e2e/maildir.py DIR
"""

import html
import json
import mailbox
import re
import sys


def plain_text(message):
    parts = message.walk() if message.is_multipart() else [message]
    texts = []
    for part in parts:
        if part.get_content_maintype() != "text":
            continue
        body = part.get_payload(decode=True).decode(part.get_content_charset() or "utf-8", "replace")
        if part.get_content_subtype() == "html":
            body = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", body, flags=re.S | re.I)
            # Keep link targets: a reader needs to see where a link goes.
            body = re.sub(r'<a [^>]*href="([^"]*)"[^>]*>', r" \1 ", body, flags=re.I)
            body = html.unescape(re.sub(r"<[^>]+>", " ", body))
        texts.append(body)
    return re.sub(r"\s+", " ", " ".join(texts)).strip()


messages = [
    {"to": m["To"], "subject": m["Subject"], "text": plain_text(m)}
    for m in mailbox.Maildir(sys.argv[1], factory=None, create=True)
]
print(json.dumps(messages))
