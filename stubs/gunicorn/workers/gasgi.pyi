import asyncio
from typing import Any

from gunicorn.workers.base import Worker

class ASGIWorker(Worker):
    loop: asyncio.AbstractEventLoop
    servers: list[Any]
    async def _serve(self) -> None: ...
    def handle_exit_signal(self) -> None: ...
    def handle_quit_signal(self) -> None: ...
