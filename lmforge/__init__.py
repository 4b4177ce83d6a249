"""lmforge: the composition root (console script, ``lmforge up``) and the shared config base."""
