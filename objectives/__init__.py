"""Swappable training objectives (installed as `stlm_selfplay.objectives`).

A new objective is one file (a class decorated with `@register("name")`) plus one import line
below.
"""

from stlm_selfplay.objectives.base import Batch, Objective, ObjectiveOutput
from stlm_selfplay.objectives.registry import REGISTRY, ObjectiveSet, build_objective, build_objectives, register

from stlm_selfplay.objectives import ce  # noqa: F401  (registers "ce")
from stlm_selfplay.objectives import reinforce  # noqa: F401  (registers "reinforce")
from stlm_selfplay.objectives import ppo  # noqa: F401  (registers "ppo")
from stlm_selfplay.objectives import grpo  # noqa: F401  (registers "grpo")
from stlm_selfplay.objectives import z_loss  # noqa: F401  (registers "z_loss")
from stlm_selfplay.objectives import distill  # noqa: F401  (registers "distill")
from stlm_selfplay.objectives import early_exit  # noqa: F401  (registers "early_exit")
from stlm_selfplay.objectives import mtp  # noqa: F401  (registers "mtp")
from stlm_selfplay.objectives import mod  # noqa: F401  (registers "mod")
from stlm_selfplay.objectives import value  # noqa: F401  (registers "value")
from stlm_selfplay.objectives import search_policy  # noqa: F401  (registers "search_policy")
from stlm_selfplay.objectives import mmd  # noqa: F401  (registers "mmd")
from stlm_selfplay.objectives import legal_mass  # noqa: F401  (registers "legal_mass")

__all__ = ["Batch", "Objective", "ObjectiveOutput", "ObjectiveSet", "REGISTRY", "build_objective", "build_objectives", "register"]
