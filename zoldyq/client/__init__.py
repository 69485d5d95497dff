"""The HTTP client engine: a ZoldyQ server behind the same ``Broker`` interface as the
local engine (``zoldyq.connect("http://host:9000")``)."""

from zoldyq.client.broker import Broker, Message, Queue

__all__ = ["Broker", "Message", "Queue"]
