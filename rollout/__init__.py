"""``lmforge rollout PLAN.yaml``: a new version of a model, from load to all of the traffic,
without a failed request when it is good and with an automatic rollback when it is not.

One module per concern; the pure ones can be tested without a server:

* :mod:`~rollout.plan`: the plan file (strict YAML, validated once);
* :mod:`~rollout.routes`: the route's gateway config at each step (pure);
* :mod:`~rollout.counters`, :mod:`~rollout.checks`: the gateway's counters
  and the checks and verdict of a stage (pure);
* :mod:`~rollout.triton_versions`, :mod:`~rollout.gateway_file`,
  :mod:`~rollout.gateway_view`: the side effects: Triton's versions, the gateway's
  config file, the running gateway (each behind a ``Protocol`` where the engine uses it);
* :mod:`~rollout.preflight`, :mod:`~rollout.warmup`,
  :mod:`~rollout.watch`, :mod:`~rollout.engine`: the rollout: checked
  before anything changes, warmed, watched stage by stage, promoted or rolled back
  (:mod:`~rollout.state` keeps what it changed on disk for ``--rollback``);
* ``--demo`` lives with the benchmarks (:mod:`benchmarks.rollout_demo`);
* the command, ``lmforge rollout``, is wired by the composition root (:mod:`lmforge.rollout_cli`).
"""

from rollout.engine import Rollout
from rollout.errors import RolloutError, RolloutFailed
from rollout.plan import RolloutPlan, load_plan

__all__ = [
    "Rollout",
    "RolloutError",
    "RolloutFailed",
    "RolloutPlan",
    "load_plan",
]
