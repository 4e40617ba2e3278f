"""lm-eval-harness drives an STLM through its Python API (needs the `eval` extra: lm-eval)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install -e '.[eval]')")

import lm_eval  # noqa: E402
import numpy as np  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402

from stlm_selfplay.eval.lm_eval import evaluate_questions, load_questions  # noqa: E402
from stlm_selfplay.eval.lm_tasks import get_task  # noqa: E402
from stlm_selfplay.model import ByteTokenizer  # noqa: E402
from stlm_selfplay.model.tokenizer import EOS_ID  # noqa: E402
from test_eval_lm import FIXTURES, random_model, write_jsonl  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return random_model(max_seq_len=192)  # the fixtures' contexts fit: no truncation


@torch.no_grad()
def full_softmax_loglik(model, context: list[int], continuation: bytes) -> float:
    """What the harness computes: the last max_seq_len ids of context + continuation (minus the
    final one) in one forward pass; log-softmax over the whole vocabulary."""
    ids = (context + list(continuation))[-(model.config.max_seq_len + 1):]
    logp = torch.log_softmax(model(torch.tensor([ids[:-1]])).logits[0].float(), dim=-1)
    n = len(continuation)
    return sum(float(logp[len(ids) - 1 - n + j, b]) for j, b in enumerate(continuation))


def harness(model) -> HFLM:
    """The README's recipe: EOS (the document boundary of pretraining) before an empty context."""
    return HFLM(pretrained=model, tokenizer=ByteTokenizer(), backend="causal", batch_size=8,
                max_length=model.config.max_seq_len, prefix_token_id=EOS_ID)


def test_hflm_scores_an_stlm_with_the_byte_tokenizer(model):
    lm = harness(model)
    long_question = "Question: " + "which colour is the sky on a clear day? " * 6 + "\nAnswer:"
    requests = [("Question: what colour is grass?\nAnswer:", " green"), ("Question: what colour is grass?\nAnswer:", " é!"),
                (long_question, " blue"), ("", " The cats sleep.")]
    got = [ll for ll, _ in lm.loglikelihood([Instance("loglikelihood", {}, r, i) for i, r in enumerate(requests)])]
    hand = [full_softmax_loglik(model, list(c.encode()) if c else [EOS_ID], x.encode()) for c, x in requests]
    assert got == pytest.approx(hand, abs=1e-4)


# The harness's own task configs, pointed at our fixture files (the blimp comparison is left out:
# for an empty context the harness conditions on EOS, `stlm eval-lm` on the start of the window).
HARNESS_CONFIGS = {"hellaswag": "hellaswag/hellaswag.yaml", "arc_easy": "arc/arc_easy.yaml",
                   "winogrande": "winogrande/default.yaml", "mmlu": "mmlu/default/mmlu_college_physics.yaml"}


def test_harness_tasks_on_the_same_files_give_our_accuracies(model, tmp_path):
    """Contexts fit the window here: on longer ones the harness keeps one byte more of context."""
    try:
        from lm_eval.tasks._yaml_loader import load_yaml
    except ImportError:
        pytest.skip("this lm-eval version has no lm_eval.tasks._yaml_loader.load_yaml")
    root = Path(lm_eval.__file__).parent / "tasks"
    configs, ours = [], {}
    for name, file in HARNESS_CONFIGS.items():
        write_jsonl(tmp_path, name, FIXTURES[name](np.random.default_rng(7), 12))
        ours[name] = evaluate_questions(model, get_task(name), load_questions(name, tmp_path))
        split = get_task(name).split
        config = load_yaml(root / file)
        config.pop("tag", None)
        config.update(task=f"stlm_fixture_{name}", dataset_path="json", dataset_name=None, training_split=None,
                      validation_split=None, test_split=None, fewshot_split=None,
                      dataset_kwargs={"data_files": {split: str(tmp_path / f"{name}.jsonl")},
                                      "cache_dir": str(tmp_path / "hf_cache")})
        config["test_split" if split == "test" else "validation_split"] = split
        configs.append(config)
    results = lm_eval.simple_evaluate(model=harness(model), tasks=configs, bootstrap_iters=0, log_samples=False,
                                      random_seed=None, numpy_random_seed=None, torch_random_seed=None,
                                      fewshot_random_seed=None)["results"]  # no seeding: global RNG untouched
    for name, result in ours.items():
        theirs = results[f"stlm_fixture_{name}"]
        assert result["acc"] == pytest.approx(theirs["acc,none"]), name
        if "acc_norm" in result:
            assert result["acc_norm"] == pytest.approx(theirs["acc_norm,none"]), name
