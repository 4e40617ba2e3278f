"""stlm-selfplay: super tiny byte-level language models, pretraining and self-play.

Importing the package is light (no torch, no transformers), so `stlm --help` is fast. The public
names below (`STLMForCausalLM`, `STLMConfig`, `generate`, ...) load on first use, from
`stlm_selfplay.model`, and importing `stlm_selfplay.model` (or any module under it) registers the
`stlm` model type with transformers' `AutoConfig`, `AutoModelForCausalLM` and `AutoTokenizer`, so
every model built or loaded through the package finds it. A script that uses only the Auto
classes calls `stlm_selfplay.register_auto_classes()` (or imports transformers first: then
`import stlm_selfplay` registers at once).
"""

__version__ = "0.1.0"

import os as _os
import sys as _sys

# MKL's results may depend on memory alignment unless its conditional numerical reproducibility
# mode is set (Intel MKL docs: "MKL_CBWR"). Seeded runs must give the same numbers in every
# process (a resumed run equals an uninterrupted one), so ask for strict mode before torch loads
# MKL; a user's own setting wins. Without it a seeded self-play evaluation differed in the last
# float64 digit between two processes evaluating the same weights.
_os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

# public name -> the module that defines it (imported on first access, PEP 562)
_LAZY = {name: "stlm_selfplay.model" for name in (
    "ByteTokenizer", "Completion", "STLMConfig", "STLMForCausalLM", "STLMOutput", "SpeculativeStats",
    "flops_per_byte", "generate", "load_preset", "param_table", "register_auto_classes", "score",
    "speculative_generate")}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:  # submodules (`from stlm_selfplay import envs`) fall back to the import system
        raise AttributeError(f"module 'stlm_selfplay' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


if "transformers" in _sys.modules:  # the user's script already pays for transformers: register now
    __getattr__("register_auto_classes")()
