"""stlm-selfplay: super tiny byte-level language models, pretraining and self-play.

Importing the package registers the `stlm` model type with transformers' `AutoConfig`,
`AutoModelForCausalLM` and `AutoTokenizer`.
"""

__version__ = "0.1.0"

import os as _os

# MKL's results may depend on memory alignment unless its conditional numerical reproducibility
# mode is set (Intel MKL docs: "MKL_CBWR"). Seeded runs must give the same numbers in every
# process (a resumed run equals an uninterrupted one), so ask for strict mode before torch loads
# MKL; a user's own setting wins. Without it a seeded self-play evaluation differed in the last
# float64 digit between two processes evaluating the same weights.
_os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

from stlm_selfplay.model import register_auto_classes as _register

_register()
