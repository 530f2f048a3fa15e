# syntax=docker/dockerfile:1
# hybridcache server image: multi-stage, slim, non-root, health-checked on grpc.health.v1.

FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir "build>=1.2,<2"
COPY client/ client/
COPY server/ server/
COPY pyproject.toml README.md ./
# Two wheels: the client (generated stubs, shared) and the server that depends on it.
RUN python -m build --wheel --outdir /wheels client \
 && python -m build --wheel --outdir /wheels .

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HYBRIDCACHE_HOST=0.0.0.0 \
    HYBRIDCACHE_PORT=50051 \
    HYBRIDCACHE_LOG_FORMAT=json
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --find-links /wheels hybridcache \
 && rm -rf /wheels \
 && useradd --system --uid 10001 --no-create-home hybridcache
USER 10001
EXPOSE 50051 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["hybridcache", "health"]
ENTRYPOINT ["hybridcache"]
CMD ["serve"]
