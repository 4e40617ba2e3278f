"""How a `pool` opponent is drawn from the snapshot pool (`selfplay.pool.sampling`): each sampler
maps the pool to one weight per snapshot, oldest first.

    uniform:      w_i = 1
    latest:       w_i = latest_decay ** (age_i),   age 0 = the newest snapshot
    prioritized:  w_i = (1 - s_i) ** priority_power + 1e-3,   s_i = EMA of the learner's score
                  (win 1, draw 1/2, loss 0) against snapshot i (prior 1/2): PFSP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stlm_selfplay.registry import Registry

if TYPE_CHECKING:
    from stlm_selfplay.selfplay.opponents import Pool

POOL_SAMPLERS = Registry("selfplay.pool.sampling")  # name -> (pool -> [weight per snapshot])


@POOL_SAMPLERS.register("uniform")
def uniform(pool: Pool) -> list[float]:
    return [1.0] * len(pool.snapshots)


@POOL_SAMPLERS.register("latest")
def latest(pool: Pool) -> list[float]:
    n = len(pool.snapshots)
    return [pool.cfg.latest_decay ** (n - 1 - i) for i in range(n)]


@POOL_SAMPLERS.register("prioritized")
def prioritized(pool: Pool) -> list[float]:
    return [(1.0 - s.score) ** pool.cfg.priority_power + 1e-3 for s in pool.snapshots]
