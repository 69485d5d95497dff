"""gunicorn config: ``gunicorn -c gunicorn.conf.py workers.http:app``.

Settings and hooks live in ``zoldyq.http.gunicorn_conf`` (importable from an
installed package too); this file only re-exports them.
"""

from zoldyq.http.gunicorn_conf import *  # noqa: F403
