"""Multiple-choice benchmark tasks, turned into log-likelihood questions as lm-eval-harness does.

Each task names its public dataset (the one lm-eval-harness loads), the fields a row must hold,
and `to_question(row) -> Question`. Option i of a question is scored as

    loglik_i = log p(continuation_i | context_i)      (summed over the continuation's bytes)

with the harness's zero-shot prompt templates; the target delimiter is one space, so an
option's continuation is `" " + option` unless the task says otherwise. A new task is one
`to_question` function plus one `register(LMTask(...))` line.

| task       | dataset (config), split             | context -> continuation                         |
|------------|-------------------------------------|-------------------------------------------------|
| blimp      | nyu-mll/blimp (all 67), train       | "" -> " sentence_good" / " sentence_bad"        |
| hellaswag  | Rowan/hellaswag, validation         | "label: ctx_a Ctx_b" -> " ending"               |
| arc_easy   | allenai/ai2_arc (ARC-Easy), test    | "Question: q\\nAnswer:" -> " choice"            |
| winogrande | allenai/winogrande (xl), validation | "before_ option" -> " rest of the sentence"    |
| mmlu       | cais/mmlu (all), test               | "<about subject>q\\nA. ..D. ..\\nAnswer:" -> " A" |
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from stlm_selfplay.errors import unknown_name

TARGET_DELIMITER = " "
LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class Question:
    """One multiple-choice item: option i is `continuations[i]` given `contexts[i]`.

    `choices` are the option texts whose length in characters normalizes acc_norm.
    """

    contexts: tuple[str, ...]
    continuations: tuple[str, ...]
    choices: tuple[str, ...]
    gold: int


@dataclass(frozen=True)
class LMTask:
    """A benchmark: where its rows come from and how a row becomes a `Question`."""

    name: str
    dataset: str  # Hugging Face dataset id, as lm-eval-harness uses it
    configs: tuple[str, ...] | None  # dataset configs to concatenate; None = every config
    split: str
    fields: tuple[str, ...]  # the row schema (also what `--data-dir` files must hold)
    to_question: Callable[[dict], Question]
    metrics: tuple[str, ...] = ("acc",)  # the harness's reported metrics for this task
    group_field: str | None = None  # `--limit` draws evenly across these groups


TASKS: dict[str, LMTask] = {}


def register(task: LMTask) -> LMTask:
    TASKS[task.name] = task
    return task


def get_task(name: str) -> LMTask:
    if name not in TASKS:
        raise unknown_name("eval-lm task", name, [*TASKS, "bpb"])
    return TASKS[name]


def options_question(context: str, options: list[str], gold: int) -> Question:
    """The common case: one shared context, option i continues it as `" " + options[i]`."""
    options = [str(o) for o in options]
    return Question(
        contexts=(context,) * len(options),
        continuations=tuple(TARGET_DELIMITER + o for o in options),
        choices=tuple(options),
        gold=int(gold),
    )


def blimp_question(row: dict) -> Question:
    """A minimal pair: the grammatical sentence (gold 0) against the ungrammatical one."""
    return options_question("", [row["sentence_good"], row["sentence_bad"]], 0)


def clean_wikihow(text: str) -> str:
    """HellaSwag's WikiHow clean-up: " [title]" -> ". ", other [bracketed] tags dropped,
    double spaces collapsed, ends stripped."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hellaswag_question(row: dict) -> Question:
    """context = clean("activity_label: ctx_a Ctx_b"), options = cleaned endings."""
    context = clean_wikihow(f"{row['activity_label']}: {row['ctx_a']} {row['ctx_b'].capitalize()}")
    return options_question(context, [clean_wikihow(e) for e in row["endings"]], int(row["label"]))


def arc_question(row: dict) -> Question:
    """context = "Question: <question>\\nAnswer:", options = the choice texts."""
    choices = row["choices"]
    gold = list(choices["label"]).index(row["answerKey"])
    return options_question(f"Question: {row['question']}\nAnswer:", list(choices["text"]), gold)


def winogrande_question(row: dict) -> Question:
    """Partial scoring: context_i = sentence up to the blank + option_i; the shared
    continuation is the rest of the sentence after the blank."""
    sentence = row["sentence"]
    blank = sentence.index("_")
    options = [row["option1"], row["option2"]]
    rest = TARGET_DELIMITER + sentence[blank + 1 :].strip()
    return Question(
        contexts=tuple(sentence[:blank] + o for o in options),
        continuations=(rest, rest),
        choices=(rest, rest),
        gold=int(row["answer"]) - 1,
    )


def mmlu_question(row: dict) -> Question:
    """The question with lettered choices; scored by the answer letter (" A" .. " D")."""
    subject = str(row["subject"]).replace("_", " ")
    lines = [row["question"].strip()] + [f"{LETTERS[i]}. {c}" for i, c in enumerate(row["choices"])]
    context = (f"The following are multiple choice questions (with answers) about {subject}.\n\n"
               + "\n".join(lines) + "\nAnswer:")
    return options_question(context, list(LETTERS[: len(row["choices"])]), int(row["answer"]))


register(LMTask("blimp", "nyu-mll/blimp", None, "train", ("sentence_good", "sentence_bad"),
                blimp_question, group_field="UID"))
register(LMTask("hellaswag", "Rowan/hellaswag", None, "validation",
                ("activity_label", "ctx_a", "ctx_b", "endings", "label"), hellaswag_question,
                metrics=("acc", "acc_norm")))
register(LMTask("arc_easy", "allenai/ai2_arc", ("ARC-Easy",), "test", ("question", "choices", "answerKey"),
                arc_question, metrics=("acc", "acc_norm")))
register(LMTask("winogrande", "allenai/winogrande", ("winogrande_xl",), "validation",
                ("sentence", "option1", "option2", "answer"), winogrande_question))
register(LMTask("mmlu", "cais/mmlu", ("all",), "test", ("question", "subject", "choices", "answer"),
                mmlu_question, group_field="subject"))
