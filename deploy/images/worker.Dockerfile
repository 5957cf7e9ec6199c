# GPU worker image: NVIDIA's TensorRT-LLM 1.2 release container (CUDA, OpenMPI, Python 3.12 and
# tensorrt-llm 1.2.0 already installed) plus the worker and only its own runtime dependencies:
# no JWT, policy, audit or Postgres libraries. Build from the repository root:
#   docker build -f deploy/images/worker.Dockerfile -t llm-worker:trtllm .
FROM nvcr.io/nvidia/tensorrt-llm/release:1.2.0

WORKDIR /opt/llm-worker
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY gateway ./gateway
COPY workers ./workers
COPY policy ./policy
COPY audit ./audit
COPY load_tests ./load_tests
# --no-deps: the project's own dependency list is the gateway's; the worker's runtime needs are
# listed here (tests/workers/test_worker_image.py checks them against what the worker imports).
RUN pip install --no-cache-dir --no-deps . \
 && pip install --no-cache-dir \
      "grpcio>=1.85,<2" \
      "grpcio-tools>=1.85,<2" \
      "grpcio-health-checking>=1.85,<2" \
      "grpcio-reflection>=1.85,<2" \
      "grpcio-status>=1.85,<2" \
      "googleapis-common-protos>=1.70" \
      "protobuf>=6.31" \
      "opentelemetry-api>=1.45" \
      "opentelemetry-sdk>=1.45" \
      "opentelemetry-proto>=1.45" \
      "opentelemetry-exporter-otlp-proto-grpc>=1.45" \
      "prometheus-client>=0.21" \
      "uvloop>=0.21" \
      "redis>=8.0" \
      "hiredis>=3"

RUN useradd --system --uid 10001 --home-dir /var/lib/llm-worker --create-home worker
USER 10001
WORKDIR /var/lib/llm-worker
ENV PYTHONUNBUFFERED=1
EXPOSE 50061
HEALTHCHECK --interval=10s --timeout=3s --start-period=600s \
  CMD python3 -c "import grpc,sys;from grpc_health.v1 import health_pb2 as h,health_pb2_grpc as g;c=grpc.insecure_channel('127.0.0.1:50061');sys.exit(0 if g.HealthStub(c).Check(h.HealthCheckRequest(),timeout=2).status==1 else 1)"
# The model directory is mounted at /models/model; exit status 1 after a fatal engine error
# asks the orchestrator for a restart.
ENTRYPOINT ["llm-worker"]
CMD ["serve", "--engine", "trtllm", "--model", "/models/model", "--listen", "0.0.0.0:50061"]
