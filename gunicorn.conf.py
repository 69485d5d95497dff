"""gunicorn config: ``gunicorn -c gunicorn.conf.py workers.http:app``.

Settings and hooks live in ``zoldyq.serve.gunicorn_conf`` (importable from an
installed package too); this file only re-exports them.
"""

from zoldyq.serve.gunicorn_conf import *  # noqa: F403
