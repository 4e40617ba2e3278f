"""Zero-shot multiple-choice evaluation by log-likelihood, scored as lm-eval-harness scores it.

For a question with options i = 1..K, log-likelihoods from the model's batched `score`,

    ll_i     = sum over the bytes of continuation_i of log p(byte | context_i, earlier bytes)
    acc      = mean over questions of [argmax_i ll_i == gold]
    acc_norm = mean over questions of [argmax_i ll_i / len(choice_i) == gold]   (len in characters)
    chance   = mean over questions of 1 / K                 (expected accuracy of uniform guessing)
    macro    = mean over tasks of acc (and of chance)

Ties go to the first option (numpy's argmax), as in the harness. Contexts longer than the model's
window are cut from the left, keeping the continuation whole.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from stlm_selfplay.errors import UserError
from stlm_selfplay.eval.lm_data import load_rows
from stlm_selfplay.eval.lm_tasks import LMTask, Question, get_task
from stlm_selfplay.model.tokenizer import text_to_bytes

METRICS = ("acc", "acc_norm")


def to_questions(task: LMTask, rows: list[dict]) -> list[Question]:
    """Rows -> questions; a malformed row is a one-line error naming the task and the row."""
    questions = []
    for i, row in enumerate(rows):
        try:
            questions.append(task.to_question(row))
        except (KeyError, ValueError, TypeError, IndexError, AttributeError) as err:
            raise UserError(f"task '{task.name}': row {i} does not fit the schema of {task.dataset} "
                            f"({type(err).__name__}: {err}); fields needed: {', '.join(task.fields)}") from None
    return questions


def option_logliks(model: nn.Module, questions: list[Question], batch_size: int = 16) -> list[np.ndarray]:
    """ll_i of every option of every question, through one batched `score` call."""
    from stlm_selfplay.model import score

    contexts = [text_to_bytes(c) for q in questions for c in q.contexts]
    continuations = [text_to_bytes(c) for q in questions for c in q.continuations]
    per_byte = score(model, contexts, continuations, batch_size=batch_size, truncate_left=True)
    flat = np.array([float(lp.double().sum()) for lp in per_byte])
    bounds = np.cumsum([0] + [len(q.continuations) for q in questions])
    return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def accuracies(questions: list[Question], logliks: list[np.ndarray]) -> dict[str, float]:
    """{acc, acc_norm} from per-option log-likelihoods (formulas in the module docstring)."""
    golds = np.array([q.gold for q in questions])
    picks = np.array([np.argmax(ll) for ll in logliks])
    picks_norm = np.array([np.argmax(ll / np.array([float(len(c)) for c in q.choices]))
                           for q, ll in zip(questions, logliks)])
    return {"acc": float(np.mean(picks == golds)), "acc_norm": float(np.mean(picks_norm == golds))}


def chance_accuracy(questions: list[Question]) -> float:
    """Expected accuracy of a uniform guess: mean of 1 / (number of options)."""
    return float(np.mean([1.0 / len(q.continuations) for q in questions]))


def evaluate_questions(model: nn.Module, task: LMTask, questions: list[Question], batch_size: int = 16) -> dict:
    """{n, acc[, acc_norm], chance} for one task (acc_norm only where the harness reports it)."""
    scores = accuracies(questions, option_logliks(model, questions, batch_size))
    return {"n": len(questions), **{m: scores[m] for m in METRICS if m in task.metrics},
            "chance": chance_accuracy(questions)}


def load_questions(name: str, data_dir=None, limit: int | None = None) -> list[Question]:
    task = get_task(name)
    return to_questions(task, load_rows(task, data_dir, limit))


def macro_average(results: dict[str, dict]) -> dict[str, float]:
    """Mean over multiple-choice tasks of acc and of chance (tasks without acc, like bpb, skipped)."""
    tasks = [r for r in results.values() if "acc" in r]
    if not tasks:
        return {}
    return {"acc": float(np.mean([r["acc"] for r in tasks])), "chance": float(np.mean([r["chance"] for r in tasks]))}


def results_table(results: dict[str, dict]) -> str:
    """Markdown: one column per task plus the macro average; rows acc, acc_norm, chance, n."""
    mc = {name: r for name, r in results.items() if "acc" in r}
    lines = []
    if mc:
        macro = macro_average(results)
        names = [*mc, "macro"]
        cols = {**mc, "macro": macro}

        def cell(r, key):
            value = r.get(key)
            return "—" if value is None else (str(value) if key == "n" else f"{value:.4f}")

        lines += ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for key in ("acc", "acc_norm", "chance", "n"):
            lines.append(f"| {key} | " + " | ".join(cell(cols[n], key) for n in names) + " |")
    if "bpb" in results:
        r = results["bpb"]
        lines += ["", f"bits-per-byte: {r['bpb']:.4f} on {r['text']} ({r['byte_targets']} bytes, "
                      f"window {r['window']}, stride {r['stride']})"]
    return "\n".join(lines).strip() + "\n"
