# Triton for the `cpu` repository target: python-backend models that need tokenizers and
# onnxruntime inside Triton's python environment. Build from the repository root.
FROM nvcr.io/nvidia/tritonserver:24.10-py3
RUN python3 -m pip install --no-cache-dir 'tokenizers==0.23.*' 'onnxruntime==1.32.*' 'numpy<2'
COPY triton_models /opt/lmforge/triton_models
ENV PYTHONPATH=/opt/lmforge
