"""lmforge: the composition root: the ``lmforge`` console script, ``lmforge up``, the pipeline and
the rollout command, wiring the packages below into programs (nothing imports this package)."""
