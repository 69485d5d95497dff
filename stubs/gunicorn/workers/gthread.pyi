from typing import Any

from gunicorn.workers.base import Worker

class ThreadWorker(Worker):
    method_queue: Any
    def _cap_keepalive(self, deadline: float) -> None: ...
