"""Process entry points, inside the package so an installed wheel can serve:
``gunicorn zoldyq.serve.workers.http:app`` and ``python -m zoldyq.serve.workers.ws``.
The repository's top-level ``workers/`` re-exports them (``workers.http:app``)."""
