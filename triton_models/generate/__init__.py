"""The decoupled causal-LM model (``model.py`` is copied into built repositories)."""
