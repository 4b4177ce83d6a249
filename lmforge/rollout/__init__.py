"""``lmforge rollout PLAN.yaml``: a new version of a model, from load to all of the traffic,
without a failed request when it is good and with an automatic rollback when it is not.

One module per concern; the pure ones can be tested without a server:

* :mod:`~lmforge.rollout.plan`: the plan file (strict YAML, validated once);
* :mod:`~lmforge.rollout.routes`: the route's gateway config at each step (pure);
* :mod:`~lmforge.rollout.counters`, :mod:`~lmforge.rollout.checks`: the gateway's counters
  and the checks and verdict of a stage (pure);
* :mod:`~lmforge.rollout.triton_versions`, :mod:`~lmforge.rollout.gateway_file`,
  :mod:`~lmforge.rollout.gateway_view`: the side effects: Triton's versions, the gateway's
  config file, the running gateway (each behind a ``Protocol`` where the engine uses it);
* :mod:`~lmforge.rollout.preflight`, :mod:`~lmforge.rollout.warmup`,
  :mod:`~lmforge.rollout.watch`, :mod:`~lmforge.rollout.engine`: the rollout: checked
  before anything changes, warmed, watched stage by stage, promoted or rolled back
  (:mod:`~lmforge.rollout.state` keeps what it changed on disk for ``--rollback``);
* :mod:`~lmforge.rollout.demo`, :mod:`~lmforge.rollout.demo_report`: ``--demo``;
* :mod:`~lmforge.rollout.cli`: the command.
"""

from lmforge.rollout.cli import register, rollback_from_state
from lmforge.rollout.demo import run_demo
from lmforge.rollout.engine import Rollout
from lmforge.rollout.errors import RolloutError, RolloutFailed
from lmforge.rollout.plan import RolloutPlan, load_plan

__all__ = [
    "Rollout",
    "RolloutError",
    "RolloutFailed",
    "RolloutPlan",
    "load_plan",
    "register",
    "rollback_from_state",
    "run_demo",
]
