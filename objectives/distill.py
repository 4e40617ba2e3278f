"""`distill`: match a frozen teacher's next-byte distribution (Hinton et al. 2015; generalized
JSD from GKD, Agarwal et al. 2024, "On-Policy Distillation of Language Models").

With p = softmax(z_teacher / tau), q = softmax(z_student / tau) at each target position t:

    forward_kl:  D_t = KL(p || q) = sum_v p_v (log p_v - log q_v)        (mass-covering)
    reverse_kl:  D_t = KL(q || p) = sum_v q_v (log q_v - log p_v)        (mode-seeking)
    jsd:         D_t = beta KL(p || m) + (1 - beta) KL(q || m),  m = beta p + (1 - beta) q,  0 < beta < 1
    loss = tau^2 * sum_t m_t D_t / sum_t m_t                     (m = target mask; tau^2 keeps
                                                                  gradient sizes as at tau = 1)

The teacher is an STLM checkpoint (a run, run name or checkpoint folder, loaded by
`stlm_selfplay.runs.load_model`; same 259-id vocabulary, so every target counts) or a Hugging Face
causal LM whose vocabulary maps one-to-one onto bytes 0-255 (each byte b is the token chr(b), every
other token is special, as in ByT5-style tokenizers). For such a teacher the input ids are mapped
to its ids, and p and q are renormalized over the 256 bytes at byte targets only. Any other
vocabulary is a one-line `UserError`. The teacher is frozen (no gradients, eval mode), loaded on
first use (safetensors only) and kept out of the objective's parameters and state dict.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from stlm_selfplay.errors import UserError
from stlm_selfplay.objectives.base import Batch, Objective, ObjectiveOutput
from stlm_selfplay.objectives.ce import NUM_BYTES, byte_target_mask
from stlm_selfplay.objectives.registry import register
from stlm_selfplay.options import option

LOSSES = ("forward_kl", "reverse_kl", "jsd")


def divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, loss: str, beta: float = 0.5,
               temperature: float = 1.0) -> torch.Tensor:
    """Per-position divergence D [...] between teacher p and student q (module docstring), fp32."""
    log_q = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)

    def kl(log_a, log_b):  # KL(a || b)
        return (log_a.exp() * (log_a - log_b)).sum(-1)

    if loss == "forward_kl":
        return kl(log_p, log_q)
    if loss == "reverse_kl":
        return kl(log_q, log_p)
    log_m = torch.logsumexp(torch.stack([log_p + math.log(beta), log_q + math.log(1.0 - beta)]), dim=0)
    return beta * kl(log_p, log_m) + (1.0 - beta) * kl(log_q, log_m)


@dataclass
class Teacher:
    """A resolved teacher: where it is, what kind, and (HF) the id maps."""

    source: str  # folder or hub name
    kind: str  # stlm | hf
    byte_ids: list[int] | None = None  # hf: teacher id of byte b
    special_ids: dict[int, int] | None = None  # hf: student special id (pad/bos/eos) -> teacher id


def _hf_byte_map(name: str, tokenizer) -> tuple[list[int], dict[int, int]]:
    """Teacher ids of bytes 0-255 (token chr(b)); UserError unless the vocabulary is exactly those
    bytes plus special tokens."""
    from stlm_selfplay.model.tokenizer import BOS_ID, EOS_ID, PAD_ID

    vocab = tokenizer.get_vocab()
    byte_ids = [vocab.get(chr(b)) for b in range(NUM_BYTES)]
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    others = [t for t, i in vocab.items() if i not in special and i not in set(byte_ids)]
    if any(i is None for i in byte_ids) or len(set(byte_ids)) != NUM_BYTES or others:
        missing = sum(i is None for i in byte_ids)
        raise UserError(
            f"distill teacher '{name}' has a vocabulary of {len(vocab)} tokens that does not map one-to-one onto "
            f"bytes 0-255 ({missing} bytes without a token, {len(others)} non-byte tokens); use an STLM "
            "checkpoint or a byte-level causal LM")
    fallback = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, byte_ids[0]) if i is not None))
    specials = {PAD_ID: tokenizer.pad_token_id, BOS_ID: tokenizer.bos_token_id, EOS_ID: tokenizer.eos_token_id}
    return byte_ids, {k: (fallback if v is None else v) for k, v in specials.items()}


def resolve_teacher(name: str) -> Teacher:
    """Check a teacher without loading its weights: an STLM folder/run, or an HF byte-level LM."""
    from stlm_selfplay.model.tokenizer import VOCAB_SIZE
    from stlm_selfplay.runs import RUNS_DIR, resolve_model_folder

    if not name:
        raise UserError("objective 'distill' needs a teacher: teacher=<STLM run or checkpoint, or HF model>")
    source = name
    if Path(name).exists() or (RUNS_DIR / name).exists():
        folder = resolve_model_folder(name)
        source = str(folder)
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError) as err:
            raise UserError(f"distill teacher '{name}': cannot read {folder / 'config.json'}: {err}") from None
        if config.get("model_type") == "stlm":
            if config.get("vocab_size", VOCAB_SIZE) != VOCAB_SIZE:
                raise UserError(f"distill teacher '{name}' has vocab_size {config.get('vocab_size')}, "
                                f"expected the byte vocabulary of {VOCAB_SIZE}")
            return Teacher(source, "stlm")
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as err:
        raise UserError(f"distill teacher '{name}': cannot load its tokenizer: {str(err).splitlines()[0]}") from None
    byte_ids, special_ids = _hf_byte_map(name, tokenizer)
    return Teacher(source, "hf", byte_ids, special_ids)


@register("distill")
class Distill(Objective):
    """tau^2 * mean over targets of D(teacher || student) (forward KL, reverse KL or JSD(beta))."""

    @dataclass
    class Options:
        teacher: str = option("", "STLM run / checkpoint folder, or an HF causal LM with a byte vocabulary")
        loss: str = option("forward_kl", "the divergence: forward_kl, reverse_kl or jsd (generalized JSD, GKD)",
                           choices=LOSSES)
        beta: float = option(0.5, "jsd only: mixture weight of the teacher, 0 < beta < 1")
        temperature: float = option(1.0, "softens both distributions; the loss is scaled by temperature^2")

        def __post_init__(self):
            if not 0.0 < self.beta < 1.0:
                raise ValueError(f"beta must be in (0, 1), got {self.beta}")
            if self.temperature <= 0:
                raise ValueError(f"temperature must be > 0, got {self.temperature}")

    def __init__(self, options: "Distill.Options | None" = None):
        super().__init__(options)
        self.spec = resolve_teacher(self.options.teacher)
        self.__dict__["_teacher"] = None  # a plain attribute: not a submodule, not in state_dict

    def teacher(self, device: torch.device | str | None = None):
        """The frozen teacher model (loaded on first call, moved to `device`)."""
        model = self.__dict__["_teacher"]
        if model is None:
            if self.spec.kind == "stlm":
                from stlm_selfplay.runs import load_model

                model = load_model(self.spec.source)
            else:
                from transformers import AutoModelForCausalLM

                try:
                    model = AutoModelForCausalLM.from_pretrained(self.spec.source, use_safetensors=True)
                except Exception as err:
                    raise UserError(f"distill teacher '{self.options.teacher}': cannot load it "
                                    f"(safetensors only): {str(err).splitlines()[0]}") from None
            model.eval().requires_grad_(False)
            self.__dict__["_teacher"] = model
        if device is not None:
            model.to(device)
        return model

    @torch.no_grad()
    def teacher_logits(self, batch: Batch, device: torch.device) -> torch.Tensor:
        """Teacher logits aligned with the student's: [B, T, 259] (STLM) or [B, T, 256] (HF bytes)."""
        model = self.teacher(device)
        ids = batch.input_ids.to(device)
        mask = None if batch.attention_mask is None else batch.attention_mask.to(device)
        if self.spec.kind == "stlm":
            return model(ids, attention_mask=mask).logits
        table = torch.tensor(self.spec.byte_ids + [self.spec.special_ids[i] for i in sorted(self.spec.special_ids)],
                             device=device)
        logits = model(input_ids=table[ids], attention_mask=mask).logits
        return logits[..., torch.tensor(self.spec.byte_ids, device=device)]

    def forward(self, output, batch: Batch) -> ObjectiveOutput:
        student = output.logits
        mask = batch.target_mask().to(student.device)
        teacher = self.teacher_logits(batch, student.device)
        if self.spec.kind == "hf":
            student = student[..., :NUM_BYTES]
            mask = byte_target_mask(batch.input_ids.to(student.device), mask)
        if teacher.shape[-1] != student.shape[-1]:
            raise UserError(f"distill teacher '{self.options.teacher}' gives {teacher.shape[-1]} logits per position, "
                            f"the student {student.shape[-1]}")
        o = self.options
        d = divergence(student[:, :-1], teacher[:, :-1], o.loss, o.beta, o.temperature)
        loss = o.temperature ** 2 * (d * mask).sum() / mask.sum().clamp_min(1.0)
        return ObjectiveOutput(loss, {"loss": loss.item()})
