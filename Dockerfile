# ZoldyQ server image: `zoldyq serve` (HTTP :9000, WebSocket :9001) from the wheel built here.
# Queues live in /dev/shm, which Docker sizes to 64 MB unless told: run with --shm-size
# (docker-compose.yml: shm_size) at least max_queues x default_queue_max_bytes.
FROM python:3.12-slim AS build
# gcc builds the engine's C fast path into the wheel (zoldyq/shm/_speedups.c); without
# it the wheel silently holds only the pure-Python path, 2x slower per message.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY zoldyq ./zoldyq
RUN python -m pip wheel --no-cache-dir --no-deps -w /wheels .

FROM python:3.12-slim
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && python -c "from zoldyq.shm import speedups; assert speedups.ENABLED, 'no C fast path'" \
    && useradd --system --uid 10001 --home-dir /nonexistent zoldyq
COPY examples /opt/zoldyq/examples
USER zoldyq
ENV ZOLDYQ_HOST=0.0.0.0 \
    ZOLDYQ_PORT=9000 \
    ZOLDYQ_WS_PORT=9001
EXPOSE 9000 9001
# The launcher drains on SIGTERM (long-polls woken, in-flight requests finished).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9000/health', timeout=2)"]
ENTRYPOINT ["zoldyq", "serve"]
