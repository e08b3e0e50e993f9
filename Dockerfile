# syntax=docker/dockerfile:1
#
# One image for the whole suite: every service is the same image run with a
# different command (the Helm chart in helm/orchestrator does exactly that):
#
#   python -m gateway --addr 0.0.0.0:50051 --prefix orch --token-file FILE      (env ORCH_NATS_URL)
#   python -m dispatcher --addr 0.0.0.0:50052 --credential-file FILE ...       (env ORCH_NATS_URL)
#   python -m controllers.sim --addr 0.0.0.0:50060 --dispatcher HOST:50052 ...
#   python -m monitor --credential-file FILE ...                                (env ORCH_NATS_URL)
#
# Without a command it runs `orch up`: the whole suite with its embedded NATS
# in one container (a demo; the token is in /var/lib/orchestrator/.orch/token).
#
# Build:  docker build -t orchestration-engine:0.1.0 .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: a virtual environment with the suite and its generated code ----
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/orchestrator
ENV PATH=/opt/orchestrator/bin:$PATH

# Dependencies first, from pyproject.toml alone: this layer is rebuilt only
# when they change. (The controller SDK comes from sdk/ below; its own
# dependencies are among the engine's.)
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(d for d in tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'] if not d.startswith('orchestration-controller-sdk')))" \
        > /tmp/requirements.txt \
    && pip install --requirement /tmp/requirements.txt

# Then the code: the controller SDK (its build compiles the contracts it
# ships), the engine's own contracts (what `make generate` does), the suite
# itself (not editable); check that every service imports, and drop what
# only the build needs (protoc from grpcio-tools, setuptools, pip).
COPY proto ./proto
COPY sdk ./sdk
COPY services ./services
RUN pip install --no-deps ./sdk \
    && python -m grpc_tools.protoc -Iproto --python_out=services --pyi_out=services --grpc_python_out=services \
        proto/orchestration/v1/gateway.proto proto/orchestration/v1/records.proto proto/orchestration/v1/sim.proto \
    && pip install --no-deps . \
    && python -c "import orchestration.v1.gateway_pb2_grpc, orchestration_sdk.v1.controller_pb2_grpc, gateway.server, dispatcher.ownership.replica, monitor.service, controllers.sim" \
    && pip uninstall --yes grpcio-tools setuptools \
    && python -m pip uninstall --yes pip

# ---- runtime: slim Python, the virtual environment, a non-root user ----
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="orchestration-engine" \
      org.opencontainers.image.description="Lifecycle orchestration engine: gateway, dispatcher, controllers, monitor" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 orch \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/orchestrator --create-home \
        --shell /usr/sbin/nologin orch
COPY --from=builder /opt/orchestrator /opt/orchestrator
ENV PATH=/opt/orchestrator/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ORCH_HOME=/var/lib/orchestrator/.orch \
    ORCH_LOG_FORMAT=json
WORKDIR /var/lib/orchestrator
USER 10001:10001
# 50051 gateway API, 50052 dispatcher (controller registration), 50060 sim controller.
EXPOSE 50051 50052 50060
# gRPC health of the process's server: ORCH_HEALTH_ADDR names it (default the
# gateway, 127.0.0.1:50051); ORCH_HEALTH_ADDR=none for the monitor, which has no
# gRPC server. Kubernetes ignores this and uses the chart's grpc probes.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "orchestration.runtime.healthcheck"]
CMD ["orch", "up", "--gateway-addr", "0.0.0.0:50051"]
