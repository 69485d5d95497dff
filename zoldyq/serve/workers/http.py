"""The gunicorn app module (``zoldyq.serve.workers.http:app``); workers attach after the fork."""

from zoldyq.http import create_app
from zoldyq.serve import current

app = create_app(current.settings())
