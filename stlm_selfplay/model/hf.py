"""Registration of `model_type="stlm"` with transformers' Auto classes."""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from stlm_selfplay.model.config import STLMConfig
from stlm_selfplay.model.modeling import STLMForCausalLM
from stlm_selfplay.model.tokenizer import ByteTokenizer


def register() -> None:
    """Make AutoConfig / AutoModelForCausalLM / AutoTokenizer resolve "stlm" (idempotent)."""
    AutoConfig.register("stlm", STLMConfig, exist_ok=True)
    AutoModelForCausalLM.register(STLMConfig, STLMForCausalLM, exist_ok=True)
    AutoTokenizer.register(STLMConfig, slow_tokenizer_class=ByteTokenizer, exist_ok=True)
