"""eval-lm with a tiny random model: fixture files in each suite's schema, scored against
log-likelihoods computed by hand from the model's forward pass; bpb against the trainer."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import make_tiny_model

from stlm_selfplay.errors import UserError
from stlm_selfplay.eval.bpb import sliding_bpb, text_file_bpb
from stlm_selfplay.eval.lm_eval import evaluate_questions, load_questions, option_logliks
from stlm_selfplay.eval.lm_tasks import get_task
from stlm_selfplay.model import STLMForCausalLM
from stlm_selfplay.model.tokenizer import BOS_ID, EOS_ID, PAD_ID

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def random_model(max_seq_len: int) -> STLMForCausalLM:
    """A fixed tiny model (seeded without touching the caller's RNG); the wide init gives
    options clearly different log-likelihoods."""
    return make_tiny_model(seed=0, max_seq_len=max_seq_len, patch_size=4, initializer_range=0.3).eval()


@pytest.fixture(scope="module")
def model():
    return random_model(max_seq_len=96)  # short: long MMLU contexts get cut from the left


@torch.no_grad()
def next_byte_logprobs(model, prefix: bytes) -> torch.Tensor:
    """[len(prefix), 259]: row t = log p(. | prefix[:t+1]) over bytes and EOS (pad, bos excluded)."""
    logits = model(torch.tensor([list(prefix)])).logits[0].float()
    logits[:, [PAD_ID, BOS_ID]] = float("-inf")
    return torch.log_softmax(logits, dim=-1)


def hand_loglik(model, context: str, continuation: str) -> float:
    """sum_j log p(cont_j | context + cont_<j), one unpadded forward pass over the last
    max_seq_len bytes (a long context loses its oldest bytes; it must keep at least one)."""
    ctx, cont = context.encode(), continuation.encode()
    ctx = ctx[max(0, len(ctx) + len(cont) - model.config.max_seq_len):]
    logp = next_byte_logprobs(model, ctx + cont)
    return sum(float(logp[len(ctx) + j - 1, b]) for j, b in enumerate(cont))


def preferred(model, prefix: str, candidates: str) -> int:
    """Index of the candidate byte the model finds likeliest right after `prefix` (of which the
    window holds the last max_seq_len - 1 bytes)."""
    logp = next_byte_logprobs(model, prefix.encode()[1 - model.config.max_seq_len:])[-1]
    return int(np.argmax([float(logp[ord(c)]) for c in candidates]))


def write_jsonl(folder, name, rows):
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def words(rng, n):
    return " ".join("".join(rng.choice(list(LETTERS), size=rng.integers(2, 6))) for _ in range(n))


# --- fixture rows in each suite's schema, with options of different lengths ------------------

def hellaswag_rows(rng, n):
    """With WikiHow's [header]/[title]/[step] tags, which the template cleans away."""
    return [{"activity_label": words(rng, 1).title(), "ctx_a": f"[header] {words(rng, 2)} [title] {words(rng, 2)}.",
             "ctx_b": words(rng, 2), "label": str(rng.integers(4)), "split": "val",
             "endings": [f"{words(rng, int(k))} [title] {words(rng, 1)}. [step] {words(rng, 1)}."
                         for k in rng.integers(1, 3, size=4)]} for _ in range(n)]


def arc_rows(rng, n):
    rows = []
    for i in range(n):
        k = int(rng.integers(3, 6))
        labels = list("ABCDE"[:k]) if i % 2 else [str(j + 1) for j in range(k)]
        rows.append({"id": f"q{i}", "question": words(rng, 5) + "?",
                     "choices": {"text": [words(rng, int(rng.integers(1, 3))) for _ in range(k)], "label": labels},
                     "answerKey": labels[int(rng.integers(k))]})
    return rows


def winogrande_rows(rng, n):
    return [{"sentence": f"{words(rng, 3)} _ {words(rng, 3)}.", "option1": words(rng, 1), "option2": words(rng, 1),
             "answer": str(rng.integers(1, 3))} for _ in range(n)]


def mmlu_rows(rng, n):
    return [{"question": words(rng, 4) + "?", "subject": "college_physics", "choices": [words(rng, 1) for _ in range(4)],
             "answer": int(rng.integers(4))} for _ in range(n)]


FIXTURES = {"hellaswag": hellaswag_rows, "arc_easy": arc_rows, "winogrande": winogrande_rows, "mmlu": mmlu_rows}


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_acc_and_acc_norm_equal_a_hand_computation(model, tmp_path, name):
    rows = FIXTURES[name](np.random.default_rng(1), 6)
    write_jsonl(tmp_path, name, rows)
    questions = load_questions(name, tmp_path)
    got = option_logliks(model, questions, batch_size=5)
    hand = [np.array([hand_loglik(model, c, x) for c, x in zip(q.contexts, q.continuations)]) for q in questions]
    for g, h in zip(got, hand):
        np.testing.assert_allclose(g, h, atol=1e-4)
    golds = np.array([q.gold for q in questions])
    expected = {"n": 6, "acc": float(np.mean([np.argmax(h) for h in hand] == golds))}
    if name in ("hellaswag", "arc_easy"):
        lengths = [np.array([len(c) for c in q.choices], dtype=float) for q in questions]
        expected["acc_norm"] = float(np.mean([np.argmax(h / n) for h, n in zip(hand, lengths)] == golds))
    expected["chance"] = float(np.mean([1 / len(q.continuations) for q in questions]))
    assert evaluate_questions(model, get_task(name), questions, batch_size=4) == pytest.approx(expected)


def test_blimp_prefers_the_sentence_the_model_finds_likelier(model, tmp_path):
    """Both sentences follow an empty context and share their first byte (" "), so the comparison
    is decided by the rest, which a forward pass over " sentence" gives by hand."""
    rng = np.random.default_rng(2)
    rows = [{"sentence_good": words(rng, 3) + ".", "sentence_bad": words(rng, 3) + ".", "UID": "u", "pair_id": i}
            for i in range(6)]
    write_jsonl(tmp_path, "blimp", rows)
    questions = load_questions("blimp", tmp_path)
    got = option_logliks(model, questions)

    def rest(sentence):  # log p(sentence | " ")
        return hand_loglik(model, " ", sentence)

    for g, row in zip(got, rows):
        assert g[0] - g[1] == pytest.approx(rest(row["sentence_good"]) - rest(row["sentence_bad"]), abs=1e-4)
    wins = np.mean([rest(r["sentence_good"]) > rest(r["sentence_bad"]) for r in rows])
    assert evaluate_questions(model, get_task("blimp"), questions)["acc"] == pytest.approx(wins)


# --- options built from the model's own preference: 1.0; the same with shuffled answers: chance --

def preferred_rows(model, rng, n):
    """HellaSwag rows whose four endings share a stem and differ in the last letter; the label
    is the letter the model prefers after the stem (so that ending has the highest likelihood)."""
    rows, best = [], []
    for _ in range(n):
        row = hellaswag_rows(rng, 1)[0]
        letters = "".join(rng.choice(list(LETTERS), size=4, replace=False))
        stem = words(rng, 2) + " "
        context = get_task("hellaswag").to_question(row).contexts[0]
        row["endings"] = [stem + c for c in letters]
        best.append(preferred(model, f"{context} {stem}", letters))
        row["label"] = str(best[-1])
        rows.append(row)
    return rows, np.array(best)


def test_options_built_from_the_models_preference_score_one(model, tmp_path):
    rng = np.random.default_rng(3)
    rows, _ = preferred_rows(model, rng, 8)
    write_jsonl(tmp_path, "hellaswag", rows)
    mmlu = mmlu_rows(rng, 8)
    for row in mmlu:  # the answer letter the model prefers after "Answer: "
        row["answer"] = preferred(model, get_task("mmlu").to_question(row).contexts[0] + " ", "ABCD")
    write_jsonl(tmp_path, "mmlu", mmlu)
    blimp = []
    for i in range(8):  # the grammatical sentence ends in the letter the model prefers
        stem, pair = words(rng, 2) + " ", "".join(rng.choice(list(LETTERS), size=2, replace=False))
        good = preferred(model, " " + stem, pair)
        blimp.append({"sentence_good": stem + pair[good], "sentence_bad": stem + pair[1 - good], "UID": "u"})
    write_jsonl(tmp_path, "blimp", blimp)
    for name in ("hellaswag", "mmlu", "blimp"):
        result = evaluate_questions(model, get_task(name), load_questions(name, tmp_path))
        assert result["acc"] == 1.0 and result.get("acc_norm", 1.0) == 1.0, name


def test_shuffled_answers_score_near_chance(model, tmp_path):
    rng = np.random.default_rng(4)
    rows, best = preferred_rows(model, rng, 48)
    shuffled = rng.integers(4, size=len(rows))
    for row, label in zip(rows, shuffled):
        row["label"] = str(label)
    write_jsonl(tmp_path, "hellaswag", rows)
    result = evaluate_questions(model, get_task("hellaswag"), load_questions("hellaswag", tmp_path))
    assert result["acc"] == pytest.approx(np.mean(shuffled == best))  # right only where the shuffle hit
    assert result["chance"] == 0.25 and abs(result["acc"] - 0.25) < 0.15


# --- bits-per-byte ---------------------------------------------------------------------------------

def test_bpb_with_full_stride_equals_the_trainers_val_bpb(model, tmp_path):
    from stlm_selfplay.data.loader import val_sequences
    from stlm_selfplay.data.packing import pack_documents
    from stlm_selfplay.train.evaluate import evaluate_bpb

    text = ("To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 7).encode()
    path = tmp_path / "val.txt"
    path.write_bytes(text)
    shards = tmp_path / "shards"
    shards.mkdir()
    meta = pack_documents([text], shards, "hash", 1.0, shard_tokens=1 << 20)  # the whole text is val
    (shards / "meta.json").write_text(json.dumps(meta))
    for seq_len in (model.config.max_seq_len, 40):  # the default window, and a shorter data.seq_len
        trainer = evaluate_bpb(model, val_sequences(shards, seq_len), batch_size=3)
        ours = text_file_bpb(model, path, batch_size=2, window=None if seq_len == model.config.max_seq_len else seq_len)
        assert ours["stride"] == seq_len - 1 and ours["byte_targets"] == trainer["byte_targets"] == len(text) - 1
        assert ours["bpb"] == pytest.approx(trainer["bpb"], abs=1e-4)
    with pytest.raises(UserError, match="--window 97 is out of range; use 2 .. 96"):
        text_file_bpb(model, path, window=97)
    with pytest.raises(UserError, match="--stride 40 is out of range; use 1 .. 39"):
        text_file_bpb(model, path, stride=40, window=40)


def test_eval_lm_bpb_equals_the_val_bpb_a_pretraining_run_logged(tmp_path):
    """End to end: a 2-step run logs val bpb on the tail of its corpus; `stlm eval-lm --tasks bpb`
    on those bytes, with the run's seq_len as the window, gives the same number."""
    from _pretrain_helpers import text_file, tiny_config

    from stlm_selfplay.cli import main
    from stlm_selfplay.data.cache import prepare_data, read_meta
    from stlm_selfplay.train.pretrain import pretrain

    cfg = tiny_config(text_file(tmp_path, size=6000), "bpb", steps=2,
                      **{"data.val_max_sequences": 0, "logging.eval_every": 2, "run.checkpoint_every": 2})
    with torch.random.fork_rng():  # the trainer seeds the global RNG
        logged = pretrain(cfg)["val_bpb"]
    folder = prepare_data(cfg.data)
    val = np.concatenate([np.fromfile(folder / s["file"], dtype=np.uint16) for s in read_meta(folder)["splits"]["val"]])
    assert val[-1] == EOS_ID and EOS_ID not in val[:-1]  # the tail of one document
    (tmp_path / "val.txt").write_bytes(val[:-1].astype(np.uint8).tobytes())
    assert main(["eval-lm", "bpb", "--tasks", "bpb", "--text", str(tmp_path / "val.txt"),
                 "--window", str(cfg.data.seq_len), "--device", "cpu"]) == 0
    result = json.loads((tmp_path / "runs" / "bpb" / "eval_lm.json").read_text())["tasks"]["bpb"]
    assert result["byte_targets"] == len(val) - 2 and result["bpb"] == pytest.approx(logged, abs=1e-4)


@torch.no_grad()
def test_bpb_with_stride_one_predicts_each_byte_from_the_previous_window(model):
    """stride 1: byte p is predicted from the W-1 bytes before it (fewer at the start)."""
    window = 12
    ids = np.array(list(b"sliding windows give each byte more context") + [EOS_ID])
    nll = []
    for p in range(1, len(ids)):
        if ids[p] < 256:
            logits = model(torch.tensor([ids[max(0, p - window + 1):p + 1].tolist()])).logits[0, -2].float()
            nll.append(-float(torch.log_softmax(logits, -1)[ids[p]]))
    result = sliding_bpb(model, ids, window, stride=1, batch_size=7)
    assert result["byte_targets"] == len(ids) - 2
    assert result["bpb"] == pytest.approx(sum(nll) / (np.log(2) * len(nll)), abs=1e-5)


# --- the command ---------------------------------------------------------------------------------

def save_run(model, root):
    """A run folder holding one checkpoint, as the trainer writes it."""
    checkpoint = root / "run" / "checkpoints" / "step_1"
    model.save_pretrained(checkpoint)
    return root / "run"


def test_cli_writes_table_and_json_to_the_run_folder(model, tmp_path, capsys):
    from stlm_selfplay.cli import main

    run = save_run(model, tmp_path)
    write_jsonl(tmp_path, "mmlu", mmlu_rows(np.random.default_rng(5), 4))
    (tmp_path / "t.txt").write_text("a short text to measure\n" * 5)
    assert main(["eval-lm", str(run), "--tasks", "mmlu,bpb", "--data-dir", str(tmp_path),
                 "--text", str(tmp_path / "t.txt"), "--device", "cpu"]) == 0
    saved = json.loads((run / "eval_lm.json").read_text())
    expected = evaluate_questions(model, get_task("mmlu"), load_questions("mmlu", tmp_path))
    assert saved["tasks"]["mmlu"] == pytest.approx(expected)
    assert saved["tasks"]["bpb"]["bpb"] == pytest.approx(text_file_bpb(model, tmp_path / "t.txt")["bpb"], abs=1e-5)
    assert saved["macro"] == pytest.approx({"acc": expected["acc"], "chance": 0.25})
    assert "| chance | 0.2500 | 0.2500 |" in capsys.readouterr().out
    assert "| chance | 0.2500 | 0.2500 |" in (run / "eval_lm.md").read_text()

    # a later call on the same checkpoint adds its tasks and keeps the others
    write_jsonl(tmp_path, "blimp", [{"sentence_good": "A cat sat.", "sentence_bad": "A cat sit."}])
    assert main(["eval-lm", str(run), "--tasks", "blimp", "--data-dir", str(tmp_path), "--device", "cpu"]) == 0
    assert set(json.loads((run / "eval_lm.json").read_text())["tasks"]) == {"mmlu", "bpb", "blimp"}


@pytest.mark.parametrize("args, message", [
    (["--tasks", "mmlu,hellaswag"], "error: task 'hellaswag': no hellaswag.jsonl or hellaswag.parquet in"),
    (["--tasks", "mmlu,wikitext"], "error: unknown eval-lm task 'wikitext'"),
    (["--tasks", "mmlu,bpb", "--text", "missing.txt"], "error: --text 'missing.txt' does not exist"),
])
def test_cli_missing_data_or_unknown_task_is_one_line_and_exit_2(model, tmp_path, args, message):
    run = save_run(model, tmp_path)
    write_jsonl(tmp_path, "mmlu", mmlu_rows(np.random.default_rng(5), 2))
    failed = subprocess.run([sys.executable, "-m", "stlm_selfplay", "eval-lm", str(run), *args, "--data-dir", str(tmp_path)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert failed.returncode == 2 and failed.stderr.startswith(message), failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1
