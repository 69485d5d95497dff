"""``gunicorn -c gunicorn.conf.py workers.http:app`` from a checkout (the app is in the package)."""

from zoldyq.serve.workers.http import app

__all__ = ["app"]
