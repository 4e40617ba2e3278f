"""Text games (installed as `stlm_selfplay.envs`)."""
