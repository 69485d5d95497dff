"""The gunicorn app module (``zoldyq.serve.workers.http:app``); workers attach after the fork."""

from zoldyq.http import create_app
from zoldyq.settings import Settings

app = create_app(Settings.load())
