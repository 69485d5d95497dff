"""A Falcon app that enqueues from its request handler: ``POST /signup`` answers at once and
leaves the welcome email to a worker (see ``welcome_email.py``).

One ``Broker`` per process, shared by every request thread (it pools its connections).

    ZOLDYQ_URL=http://127.0.0.1:9000 python examples/falcon_app.py   # serves on :8000
    curl -X POST localhost:8000/signup -H 'Content-Type: application/json' \
         -d '{"email": "a@example.com"}'
"""

from __future__ import annotations

import os
from wsgiref.simple_server import make_server

import falcon

import zoldyq

broker = zoldyq.connect(os.environ.get("ZOLDYQ_URL", "http://127.0.0.1:9000"))
emails = broker.queue("welcome-emails")


class Signup:
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        email = (req.get_media() or {}).get("email")
        if not isinstance(email, str) or "@" not in email:
            raise falcon.HTTPBadRequest(description='send {"email": "..."}')
        try:
            emails.put({"to": email, "name": email.split("@")[0]})
        except zoldyq.QueueFull as ex:  # the same class whichever engine is behind the URL
            raise falcon.HTTPServiceUnavailable(
                description="try again soon", headers={"Retry-After": str(ex.retry_after or 1)}
            ) from None
        resp.status = falcon.HTTP_202
        resp.media = {"signed_up": email}


app = falcon.App()
app.add_route("/signup", Signup())

if __name__ == "__main__":
    with make_server("127.0.0.1", int(os.environ.get("PORT", "8000")), app) as httpd:
        httpd.serve_forever()
