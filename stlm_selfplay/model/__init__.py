"""The STLM model: byte tokenizer, byte-pooled transformer, sampler and scorer.

Importing this package (or any module under it) registers `model_type="stlm"` with transformers'
Auto classes, so a model is never built or loaded before the registration.
"""

from stlm_selfplay.model.config import STLMConfig, load_preset
from stlm_selfplay.model.flops import flops_per_byte, param_table
from stlm_selfplay.model.modeling import STLMForCausalLM, STLMOutput
from stlm_selfplay.model.sampling import Completion, generate, score
from stlm_selfplay.model.speculative import SpeculativeStats, speculative_generate
from stlm_selfplay.model.tokenizer import ByteTokenizer


def register_auto_classes() -> None:
    """Register `model_type="stlm"` with transformers' Auto classes (idempotent)."""
    from stlm_selfplay.model.hf import register

    register()


register_auto_classes()


__all__ = [
    "ByteTokenizer", "Completion", "STLMConfig", "STLMForCausalLM", "STLMOutput", "SpeculativeStats",
    "flops_per_byte", "generate", "load_preset", "param_table", "register_auto_classes", "score",
    "speculative_generate",
]
