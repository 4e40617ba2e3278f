"""stlm-selfplay: super tiny byte-level language models, pretraining and self-play.

Importing the package registers the `stlm` model type with transformers' `AutoConfig`,
`AutoModelForCausalLM` and `AutoTokenizer`.
"""

__version__ = "0.1.0"

from stlm_selfplay.model import register_auto_classes as _register

_register()
