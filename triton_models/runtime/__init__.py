"""Plain-Python helpers of the python-backend models.

Nothing here imports ``triton_python_backend_utils``, so it is tested without a server. The
repository builder copies this package (plus :mod:`triton_models.runtime.contract`) next to each
python model's ``model.py`` as ``lmforge_runtime``, which keeps a built repository
self-contained: only numpy, tokenizers and onnxruntime need to be importable inside Triton.
"""
