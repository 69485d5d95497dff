import time, threading
import zoldyq
from tests.helpers import servers
from tests.test_stuck_lock import *  # noqa
def test_x(namespace, broker, stuck):
    broker.queue("frozen").put(0)
    with servers.gunicorn(namespace, workers=1, worker_class="asgi") as srv:
        print(srv.call("GET", "/queues/frozen").json())
        stuck("frozen")
        print(srv.call("GET", "/queues/frozen").json())
        r = srv.call("GET", "/queues/frozen/dequeue")
        print("deq", r)
        r = srv.call("GET", "/queues/frozen/dequeue")
        print("deq2", r)
        print(srv.call("GET", "/queues/frozen").json())
        print(srv.log())
