"""Host-side Triton: starting, supervising and measuring the bundled ``tritonserver``.

Nothing here runs inside Triton (that is :mod:`triton_models`); nothing in :mod:`triton_models`
imports this package.
"""
