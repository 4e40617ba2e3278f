"""The STLM model: byte tokenizer, byte-pooled transformer, sampler and scorer."""


def register_auto_classes() -> None:
    """Register `model_type="stlm"` with transformers' Auto classes (idempotent)."""
    try:
        from stlm_selfplay.model.hf import register
    except ImportError:  # model not built yet
        return
    register()
