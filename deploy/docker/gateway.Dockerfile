# syntax=docker/dockerfile:1
# The lmforge gRPC gateway: only the distribution's base dependencies (grpcio, tritonclient,
# pydantic, tokenizers, ...), no torch, no ONNX Runtime, no Triton, no model weights.
#
# Build from the repository root (gateway.Dockerfile.dockerignore limits the context to the
# files copied below):
#   docker build -f deploy/docker/gateway.Dockerfile -t ghcr.io/lmforge/lmforge-gateway:0.1.0 .
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/lmforge
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
# Only the serving side: the leaf core, the gateway, the wire contract and tokenizer helper it
# shares with the models (triton_models/runtime, not the models themselves) and the client
# distribution whose generated stubs the gateway serves. setuptools' package discovery installs
# the packages that are present, so trainer/, benchmarks/, rollout/, triton_host/ and the
# lmforge/ composition root stay out (tests/integration/test_gateway_image.py checks it).
COPY lmforge_core ./lmforge_core
COPY gateway ./gateway
COPY triton_models/__init__.py ./triton_models/__init__.py
COPY triton_models/runtime ./triton_models/runtime
COPY clients/python ./clients/python
# No extras: [triton] and [train] belong to other images.
RUN /opt/lmforge/bin/pip install -c constraints.txt ./clients/python \
    && /opt/lmforge/bin/pip install -c constraints.txt .

FROM python:3.11-slim-bookworm
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin lmforge
COPY --from=build /opt/lmforge /opt/lmforge
ENV PATH=/opt/lmforge/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001
# 50051: gRPC (lmforge.v1.InferenceService, grpc.health.v1, reflection); 9464: Prometheus metrics;
# 8080: the OpenAI-compatible HTTP API (server.http_port in the ConfigMap)
EXPOSE 50051 9464 8080
# The config comes from the lmforge-gateway ConfigMap (deploy/k8s/base/gateway-configmap.yaml).
ENTRYPOINT ["lmforge-gateway", "serve", "--config", "/etc/lmforge/gateway.yaml"]
