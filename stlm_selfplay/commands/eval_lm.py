"""`stlm eval-lm RUN_OR_CHECKPOINT --tasks ...`: bits-per-byte and zero-shot benchmarks.

    stlm eval-lm runs/my_run --tasks blimp,hellaswag,arc_easy,winogrande,mmlu [--limit N] [--data-dir DIR]
    stlm eval-lm runs/my_run --tasks bpb --text FILE [--window W] [--stride S]

Prints a table (one column per task, a macro average, a chance row) and, for a run's checkpoint,
writes `eval_lm.json` and `eval_lm.md` into the run folder (or into `--out DIR`). Results for
tasks not in this call are kept when the file already holds results of the same checkpoint.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from stlm_selfplay.eval.lm_tasks import TASKS  # light: names and templates only

DEFAULT_TASKS = ",".join(TASKS)
TASK_NAMES = ", ".join([*TASKS, "bpb"])


def add_arguments(parser) -> None:
    parser.add_argument("model", metavar="RUN_OR_CHECKPOINT", help="run folder, run name under runs/, or checkpoint folder")
    parser.add_argument("--tasks", default=DEFAULT_TASKS,
                        help=f"comma-separated: {TASK_NAMES} (default: {DEFAULT_TASKS})")
    parser.add_argument("--limit", type=int, default=None,
                        help="at most N questions per task (spread across BLiMP phenomena / MMLU subjects)")
    parser.add_argument("--data-dir", default=None,
                        help="read <task>.jsonl or <task>.parquet from DIR (the public dataset's schema) instead of the hub")
    parser.add_argument("--text", default=None, help="bpb task: the text file to measure bits-per-byte on")
    parser.add_argument("--window", type=int, default=None,
                        help="bpb task: ids per window, 2 .. max_seq_len (default max_seq_len; "
                             "the run's data.seq_len reproduces its val windows)")
    parser.add_argument("--stride", type=int, default=None,
                        help="bpb task: new bytes scored per window, 1 .. window-1 "
                             "(default window-1 = the trainer's val windows; smaller = more context per byte)")
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per forward pass")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--out", default=None, help="folder for eval_lm.json/.md (default: the run folder, if any)")


def parse_tasks(spec: str, text: str | None) -> list[str]:
    """Validated task names, in order; `UserError` for unknown names or a bpb without `--text`."""
    from stlm_selfplay.errors import UserError
    from stlm_selfplay.eval.lm_tasks import get_task

    names = list(dict.fromkeys(n.strip() for n in spec.split(",") if n.strip()))
    if not names:
        raise UserError(f"--tasks is empty; name at least one of {TASK_NAMES}")
    for name in names:
        if name != "bpb":
            get_task(name)
    if "bpb" in names and not text:
        raise UserError("the bpb task needs a text: pass --text FILE")
    if text and "bpb" not in names:
        raise UserError("--text is read only by the bpb task; add bpb to --tasks")
    return names


def write_results(folder: Path, model_folder: Path, results: dict[str, dict]) -> Path:
    """Merge with results of the same checkpoint already there; write JSON + markdown atomically."""
    from stlm_selfplay.io import write_text_atomic
    from stlm_selfplay.runs import EVAL_LM_JSON, EVAL_LM_MD
    from stlm_selfplay.eval.lm_eval import macro_average, results_table

    path = folder / EVAL_LM_JSON
    try:
        old = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        old = {}
    if old.get("model") == str(model_folder):
        results = {**old.get("tasks", {}), **results}
    payload = {"model": str(model_folder), "tasks": results, "macro": macro_average(results)}
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")
    write_text_atomic(folder / EVAL_LM_MD, f"# Language-model evaluation\n\nModel: `{model_folder}`\n\n"
                      + results_table(results))
    return path


def run(args) -> int:
    import torch

    from stlm_selfplay.eval.bpb import check_text_file, text_file_bpb
    from stlm_selfplay.eval.lm_eval import evaluate_questions, load_questions, results_table
    from stlm_selfplay.eval.lm_tasks import get_task
    from stlm_selfplay.errors import UserError
    from stlm_selfplay.runs import load_model, resolve_model_folder, run_dir_of

    names = parse_tasks(args.tasks, args.text)
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit {args.limit} must be >= 1 (or left out for every question)")
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size} must be >= 1")
    folder = resolve_model_folder(args.model)
    if args.text:
        check_text_file(args.text)
    questions = {n: load_questions(n, args.data_dir, args.limit) for n in names if n != "bpb"}  # fail before loading the model
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(folder, device=device)

    results: dict[str, dict] = {}
    for name in names:
        what = f"bits-per-byte of {args.text}" if name == "bpb" else f"{len(questions[name])} questions"
        print(f"{name}: {what} ...", file=sys.stderr, flush=True)
        if name == "bpb":
            results[name] = text_file_bpb(model, args.text, args.stride, args.batch_size, args.window)
        else:
            results[name] = evaluate_questions(model, get_task(name), questions[name], args.batch_size)
    print(results_table(results), end="")

    out = Path(args.out) if args.out else run_dir_of(folder)
    if out is not None:
        print(f"wrote {write_results(out, folder, results)}")
    return 0
