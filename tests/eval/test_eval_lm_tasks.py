"""eval-lm without a model: prompt templates, data files, --limit, and the bpb windows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stlm_selfplay.errors import UserError
from stlm_selfplay.eval.bpb import window_batch, window_starts
from stlm_selfplay.eval.lm_data import limit_rows, load_rows
from stlm_selfplay.eval.lm_eval import accuracies, chance_accuracy, macro_average, results_table, to_questions
from stlm_selfplay.eval.lm_tasks import TASKS, Question, get_task
from stlm_selfplay.model.tokenizer import PAD_ID

# One row per suite, in the public dataset's schema (text made up for these tests).
ROWS = {
    "blimp": {"sentence_good": "The cats sleep.", "sentence_bad": "The cats sleeps.", "UID": "agreement",
              "field": "morphology", "pair_id": 0},
    "hellaswag": {"activity_label": "Baking cookies", "ctx_a": "A woman mixes flour in a bowl.",
                  "ctx_b": "she", "endings": ["puts the tray [title] in the oven.", "sings  loudly."],
                  "label": "1", "split": "val"},
    "arc_easy": {"id": "q1", "question": "Which is a liquid?",
                 "choices": {"text": ["rock", "water", "wood"], "label": ["A", "B", "C"]}, "answerKey": "B"},
    "winogrande": {"sentence": "The cup fell off the table because _ was slippery.",
                   "option1": "the cup", "option2": "the table", "answer": "2"},
    "mmlu": {"question": " What is 2 + 2? ", "subject": "elementary_mathematics",
             "choices": ["3", "4", "5", "22"], "answer": 1},
}


def question(name: str) -> Question:
    return get_task(name).to_question(ROWS[name])


def test_registry_holds_the_five_suites_with_their_public_datasets():
    assert {n: (t.dataset, t.configs, t.split) for n, t in TASKS.items()} == {
        "blimp": ("nyu-mll/blimp", None, "train"),
        "hellaswag": ("Rowan/hellaswag", None, "validation"),
        "arc_easy": ("allenai/ai2_arc", ("ARC-Easy",), "test"),
        "winogrande": ("allenai/winogrande", ("winogrande_xl",), "validation"),
        "mmlu": ("cais/mmlu", ("all",), "test"),
    }


def test_blimp_compares_the_two_sentences_after_an_empty_context():
    q = question("blimp")
    assert q.contexts == ("", "") and q.continuations == (" The cats sleep.", " The cats sleeps.") and q.gold == 0


def test_hellaswag_template_cleans_wikihow_tags_and_capitalizes_ctx_b():
    q = question("hellaswag")
    assert q.contexts[0] == "Baking cookies: A woman mixes flour in a bowl. She"
    assert q.choices == ("puts the tray. in the oven.", "sings loudly.")
    assert q.continuations == (" puts the tray. in the oven.", " sings loudly.") and q.gold == 1


def test_arc_template_and_gold_from_answer_key():
    q = question("arc_easy")
    assert q.contexts == ("Question: Which is a liquid?\nAnswer:",) * 3
    assert q.continuations == (" rock", " water", " wood") and q.gold == 1


def test_winogrande_scores_the_rest_of_the_sentence_after_each_filled_in_prefix():
    q = question("winogrande")
    assert q.contexts == ("The cup fell off the table because the cup", "The cup fell off the table because the table")
    assert q.continuations == (" was slippery.", " was slippery.") and q.gold == 1


def test_mmlu_is_scored_by_the_answer_letter():
    q = question("mmlu")
    assert q.contexts[0] == ("The following are multiple choice questions (with answers) about elementary mathematics."
                             "\n\nWhat is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 22\nAnswer:")
    assert q.continuations == (" A", " B", " C", " D") and q.gold == 1


def test_acc_norm_divides_by_the_option_length_in_characters():
    q = Question(contexts=("c",) * 3, continuations=(" ab", " abcdef", " x"), choices=("ab", "abcdef", "x"), gold=1)
    # acc picks option 0 (-4 > -5); per character: -2, -5/6, -3 -> option 1
    scores = accuracies([q, q], [np.array([-4.0, -5.0, -3.5]), np.array([-4.0, -5.0, -3.5])])
    assert scores == {"acc": 0.0, "acc_norm": 1.0}


def test_chance_is_the_mean_of_one_over_the_number_of_options():
    qs = [question("arc_easy"), question("mmlu")]  # 3 and 4 options
    assert chance_accuracy(qs) == pytest.approx((1 / 3 + 1 / 4) / 2)


def test_macro_average_and_table_rows():
    results = {"blimp": {"n": 2, "acc": 0.5, "chance": 0.5},
               "hellaswag": {"n": 4, "acc": 0.25, "acc_norm": 0.75, "chance": 0.25},
               "bpb": {"bpb": 1.5, "byte_targets": 10, "text": "t.txt", "window": 8, "stride": 7}}
    assert macro_average(results) == {"acc": 0.375, "chance": 0.375}
    table = results_table(results).splitlines()
    assert table[0] == "| metric | blimp | hellaswag | macro |"
    assert table[2] == "| acc | 0.5000 | 0.2500 | 0.3750 |"
    assert table[3] == "| acc_norm | — | 0.7500 | — |"
    assert table[4] == "| chance | 0.5000 | 0.2500 | 0.3750 |"
    assert table[-1].startswith("bits-per-byte: 1.5000 on t.txt (10 bytes, window 8, stride 7)")


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_data_dir_reads_jsonl_and_parquet(tmp_path, suffix):
    rows = [dict(ROWS["arc_easy"], id=f"q{i}") for i in range(3)]
    path = tmp_path / f"arc_easy{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    assert load_rows(get_task("arc_easy"), tmp_path) == rows
    assert [r["id"] for r in load_rows(get_task("arc_easy"), tmp_path, limit=2)] == ["q0", "q1"]


def test_limit_takes_rows_round_robin_across_groups():
    rows = [{"UID": g, "i": i} for g in ("a", "b", "c") for i in range(3)]
    assert [(r["UID"], r["i"]) for r in limit_rows(rows, 4, "UID")] == [("a", 0), ("b", 0), ("c", 0), ("a", 1)]
    assert limit_rows(rows, 2, None) == rows[:2]


def test_missing_or_malformed_data_is_a_one_line_user_error(tmp_path):
    with pytest.raises(UserError, match=r"task 'mmlu': no mmlu.jsonl or mmlu.parquet in .*--data-dir") as err:
        load_rows(get_task("mmlu"), tmp_path)
    assert "\n" not in str(err.value)
    (tmp_path / "mmlu.jsonl").write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(UserError, match="lack field.*subject, choices, answer"):
        load_rows(get_task("mmlu"), tmp_path)
    bad = dict(ROWS["winogrande"], sentence="no blank here")
    with pytest.raises(UserError, match="task 'winogrande': row 0 does not fit"):
        to_questions(get_task("winogrande"), [bad])


def test_hub_loading_reads_every_config_and_fails_offline_with_the_way_out(monkeypatch):
    import datasets

    calls = []

    def fake_load(path, config, split):
        calls.append((path, config, split))
        return [{"sentence_good": f"{config} good", "sentence_bad": f"{config} bad", "UID": config}] * 2

    with monkeypatch.context() as patch:
        patch.setattr(datasets, "get_dataset_config_names", lambda path: ["anaphor", "island"])
        patch.setattr(datasets, "load_dataset", fake_load)
        rows = load_rows(get_task("blimp"), limit=3)
    assert calls == [("nyu-mll/blimp", "anaphor", "train"), ("nyu-mll/blimp", "island", "train")]
    assert [r["UID"] for r in rows] == ["anaphor", "island", "anaphor"]
    # the real hub in offline mode (set for every test): one line naming the task and --data-dir
    with pytest.raises(UserError, match=r"^task 'winogrande': cannot load dataset 'allenai/winogrande' .*"
                                        r"without internet pass --data-dir DIR holding winogrande.jsonl") as err:
        load_rows(get_task("winogrande"))
    assert "\n" not in str(err.value)


def test_unknown_task_names_the_valid_ones():
    with pytest.raises(UserError, match="unknown eval-lm task 'helaswag' \\(did you mean 'hellaswag'\\?\\)"):
        get_task("helaswag")


def test_task_list_checks_names_and_the_bpb_text_before_loading_anything():
    from stlm_selfplay.commands.eval_lm import parse_tasks

    assert parse_tasks(" mmlu, bpb,mmlu ", "t.txt") == ["mmlu", "bpb"]
    with pytest.raises(UserError, match="the bpb task needs a text: pass --text FILE"):
        parse_tasks("bpb", None)
    with pytest.raises(UserError, match="add bpb to --tasks"):
        parse_tasks("blimp", "t.txt")
    with pytest.raises(UserError, match="unknown eval-lm task 'arc'"):
        parse_tasks("blimp,arc", None)


def test_windows_score_each_target_once_and_match_packed_val_rows_at_full_stride():
    ids = np.arange(20)
    for window, stride in [(8, 7), (8, 3), (8, 1), (5, 4)]:
        starts = window_starts(len(ids), window, stride)
        inputs, mask = window_batch(ids, starts, window, stride)
        scored = [s + j for row, s in enumerate(starts) for j in range(window) if mask[row, j]]
        assert sorted(scored) == list(range(1, 20)), (window, stride)  # every id after the first, once
        for row, s in enumerate(starts):  # later windows score only their last `stride` positions
            if s > 0 and s + window <= len(ids):
                assert mask[row].tolist() == [0.0] * (window - stride) + [1.0] * stride
    # stride W-1: the trainer's val rows (starts range(0, n-1, W-1), last row PAD-filled)
    starts = window_starts(20, 8, 7)
    assert starts == list(range(0, 19, 7))
    inputs, _ = window_batch(ids, starts, 8, 7)
    assert inputs[-1].tolist() == [14, 15, 16, 17, 18, 19, PAD_ID, PAD_ID]
