"""The gunicorn app module: ``gunicorn -c gunicorn.conf.py workers.http:app``."""

from zoldyq.http import create_app
from zoldyq.settings import Settings

app = create_app(Settings.load())
