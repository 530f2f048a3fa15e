# syntax=docker/dockerfile:1
# hybridcache server image: multi-stage, slim, non-root, health-checked on grpc.health.v1.
#
#   docker build -t hybridcache-server:0.1.0 .                      # FROM the pinned public base
#   podman build --isolation chroot --format docker \
#     --build-arg BASE_IMAGE=localhost/hybridcache-base:bookworm \
#     -t hybridcache-server:0.1.0 .                                 # FROM a local base (scripts/image-base)
#
# BASE_IMAGE is any Debian-like image with python3 (3.11+) and `python3 -m venv`. The default
# is the public python 3.11 slim image pinned by the digest of its multi-architecture index,
# so a rebuild gets the same bytes. To refresh it: `docker buildx imagetools inspect
# python:3.11-slim-bookworm` (or `crane digest python:3.11-slim-bookworm`), put the new
# version and digest here, rebuild and run `make image-test`.
ARG BASE_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

FROM ${BASE_IMAGE} AS build
WORKDIR /src
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip install --no-cache-dir --disable-pip-version-check "build==1.6.1"
COPY client/ client/
COPY server/ server/
COPY pyproject.toml README.md ./
# Two wheels: the client (generated stubs, shared) and the server that depends on it.
RUN /opt/build/bin/python -m build --wheel --outdir /wheels client \
 && /opt/build/bin/python -m build --wheel --outdir /wheels .

FROM ${BASE_IMAGE} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/hybridcache/bin:$PATH \
    HYBRIDCACHE_HOST=0.0.0.0 \
    HYBRIDCACHE_PORT=50051 \
    HYBRIDCACHE_LOG_FORMAT=json
COPY --from=build /wheels /wheels
# The project's own wheels by path, never by name: the name "hybridcache" on the public index
# is an unrelated project. Their dependencies come from the index within pyproject's ranges.
RUN python3 -m venv /opt/hybridcache \
 && /opt/hybridcache/bin/pip install --no-cache-dir --disable-pip-version-check \
      /wheels/hybridcache_client-*.whl /wheels/hybridcache_server-*.whl \
 && rm -rf /wheels \
 && useradd --no-log-init --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin hybridcache
USER 10001
EXPOSE 50051 9464
# SIGTERM starts the graceful stop: HYBRIDCACHE_DRAIN_S (2 s) NOT_SERVING while still
# serving, then HYBRIDCACHE_GRACE_S (10 s) for in-flight calls. Give the runtime more than
# their sum before it kills: `docker stop -t 20` / `docker run --stop-timeout 20`.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["hybridcache", "health"]
ENTRYPOINT ["hybridcache"]
CMD ["serve"]
