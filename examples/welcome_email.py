"""Welcome emails: the sign-up handler enqueues; a worker long-polls with a lease, sends, acks.

A worker that dies while sending leaves its message leased: it comes back when the lease
ends and the next worker sends it (at-least-once). Against a running server:

    ZOLDYQ_URL=http://127.0.0.1:9000 python examples/welcome_email.py
"""

from __future__ import annotations

import os
import sys

import zoldyq

URL = os.environ.get("ZOLDYQ_URL", "http://127.0.0.1:9000")


def send_email(to: str, name: str) -> None:
    print(f"sent welcome email to {name} <{to}>")  # your SMTP or email API call here


def main(signups: int = 5) -> int:
    with zoldyq.connect(URL) as broker:
        emails = broker.queue("welcome-emails")
        for i in range(signups):  # what the sign-up handler does
            emails.put({"to": f"user{i}@example.com", "name": f"User {i}"})
        sent = 0
        while sent < signups:
            # Long-poll up to 5 s; the message stays hidden for 30 s while we work on it,
            # is acked when the block ends and given back (nacked) if it raises.
            with emails.lease(30, timeout=5) as msg:
                if msg is None:
                    break
                send_email(**msg.payload)
                sent += 1
    print(f"done: {sent} welcome emails sent")
    return 0 if sent == signups else 1


if __name__ == "__main__":
    sys.exit(main())
