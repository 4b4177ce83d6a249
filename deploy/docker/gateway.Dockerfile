# The lmforge gRPC gateway: no torch, no model weights, only the serving dependencies.
# Build from the repository root:  docker build -f deploy/docker/gateway.Dockerfile -t lmforge-gateway .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY gateway ./gateway
COPY triton_models ./triton_models
COPY trainer/__init__.py trainer/cli.py ./trainer/
RUN python -m pip install --no-cache-dir --prefix=/install -c constraints.txt .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 lmforge
COPY --from=build /install /usr/local
USER 10001
EXPOSE 50051 9100
ENTRYPOINT ["lmforge", "serve", "--config", "/etc/lmforge/gateway.yaml"]
