"""Image pipeline: uploads go in as raw bytes, a worker streams them over WebSocket, makes a
"thumbnail" and queues a JSON result for the next stage.

``stream()`` uses the server's WebSocket stream (the client finds its port with
``GET /info``) and reconnects by itself if the server restarts.

    ZOLDYQ_URL=http://127.0.0.1:9000 python examples/image_pipeline.py
"""

from __future__ import annotations

import hashlib
import os
import sys

import zoldyq

URL = os.environ.get("ZOLDYQ_URL", "http://127.0.0.1:9000")


def thumbnail(image: bytes) -> dict[str, object]:
    return {"sha256": hashlib.sha256(image).hexdigest()[:16], "bytes": len(image) // 10}


def main(uploads: int = 20) -> int:
    with zoldyq.connect(URL) as broker:
        images, thumbs = broker.queue("images"), broker.queue("thumbnails")
        for i in range(uploads):  # the upload handler stores raw bytes, not JSON
            images.put_bytes(b"\x89PNG" + os.urandom(1000 + i))
        done = 0
        for msg in images.stream(timeout=3):  # ends after 3 s without a message
            thumbs.put(thumbnail(msg.payload))
            done += 1
            if done == uploads:
                break
        results = thumbs.get_many(max=uploads, timeout=1)
    print(f"done: {done} images streamed, {len(results)} thumbnails queued")
    return 0 if len(results) == uploads else 1


if __name__ == "__main__":
    sys.exit(main())
