"""The repository builder: a declarative spec → a Triton model repository on disk.

``spec`` (pydantic) → ``export`` (ONNX) → ``parity`` (PyTorch vs ONNX Runtime) →
``quantize`` (optional, gated) → ``pbtxt`` (configs checked against Triton's
``model_config.proto``) → ``builder`` (atomic write). ``commands`` adds ``lmforge repo``.
"""
