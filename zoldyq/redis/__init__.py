"""The Redis engine: the same Broker/Queue/Message interface as ``zoldyq.shm``,
for several front ends (on several hosts) over one Redis or Redis Cluster."""

from zoldyq.redis.broker import Broker, Counters, Queue, connect, destroy
from zoldyq.redis.records import Message

__all__ = ["Broker", "Counters", "Message", "Queue", "connect", "destroy"]
