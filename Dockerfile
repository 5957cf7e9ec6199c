# Gateway and audit-store image (`llm-gateway`, `llm-audit`). Multi-stage: the runtime stage holds
# only the pinned runtime dependencies (requirements/runtime.lock) and the project, no compiler, no
# proto generator, no chart or load-test libraries. Non-root (uid/gid 10001), runs with a read-only
# root filesystem. Build: docker build -t registry.region.example/llm-gateway:0.1.0 .
#
# The base image is pinned by version. Pin it by digest as well where a registry is reachable
# (`docker buildx imagetools inspect python:3.11.14-slim-bookworm`, then FROM ...@sha256:...):
# the repository is maintained offline, where a digest cannot be looked up.
FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies first (their own layer, rebuilt only when the lock file changes), every wheel
# checked against the hashes in the lock file.
COPY requirements/runtime.lock requirements/runtime.lock
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-hashes --only-binary=:all: -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY gateway ./gateway
COPY workers ./workers
COPY policy ./policy
COPY audit ./audit
COPY load_tests ./load_tests
# The project itself, without resolving anything: its dependencies are exactly the lock file's.
RUN /opt/venv/bin/pip install --no-deps . \
    && /opt/venv/bin/pip uninstall --yes setuptools

FROM python:3.11.14-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/llm-gateway --create-home gateway
COPY --from=build /opt/venv /opt/venv
# No .pyc writes: the root filesystem is read-only in Kubernetes.
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /var/lib/llm-gateway
# 50051: client gRPC and 8443: the OpenAI-compatible HTTP door (`http.listen`), both mutual TLS
# in production. 9464: plaintext health and metrics (`metrics.listen`; GET /healthz, /readyz,
# /metrics) for the kubelet and Prometheus.
EXPOSE 50051 8443 9464
# Readiness over the plaintext health port: a TLS-only client port cannot be probed in plaintext.
# (The audit store run from this image has no such port; Kubernetes probes it by TCP instead.)
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request as u; sys.exit(0 if u.urlopen('http://127.0.0.1:9464/readyz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["llm-gateway"]
CMD ["serve", "--config", "/etc/llm-gateway/config/gateway.yaml"]
