"""`STLMForCausalLM`: bytes -> local encoder -> patches -> global trunk -> local decoder -> bytes.

    patch vector  p_k = W_in pool(enc(E[x_bytes of patch k] + pos))          (local encoder;
                  + hashed n-gram embeddings of each byte when ngram_max, `ngrams.py`)
    trunk state   s_k = Trunk(p_0..p_k)                                        (causal over patches)
    condition     c_m = W_c norm(s_{m-1})   (c_0 = W_c start, a learned vector)
    byte logits   dec(E[window_m] + c_m)  -> norm -> E^T                      (local decoder;
                  soft-capped c tanh(z / c) when logit_softcap = c)

Patch m's bytes are predicted from the trunk state of patches 0..m-1 and, through the decoder's
causal window over [previous patch, current patch] bytes, from the bytes before each target:
an exact next-byte distribution at every position. `decoder_attention: stream` replaces the windows
by one causal pass over all bytes, and `encoder_attention: stream` runs the encoder that way too and
feeds its byte states to the decoder (`stream.py`). With P=1, no local layers and d_local ==
d_model this is exactly a byte-level GPT: logits_t = E norm(s_t). See `patching.py` for the
index grids and `layers.py` for the blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from stlm_selfplay.model.config import STLMConfig
from stlm_selfplay.model.layers import Block, CacheStep, LayerCache, SwiGLU, rope_angles
from stlm_selfplay.model.local import LocalDecoder, LocalEncoder
from stlm_selfplay.model.mod import ROUTINGS, Router, RouterOutput, routed_block
from stlm_selfplay.model.ngrams import NgramEmbedding
from stlm_selfplay.model.patching import (PatchLayout, make_layout, needed_windows, pick_windows, place_windows,
                                          unalign)
from stlm_selfplay.model.shared_prefix import shared_prefix_trunk
from stlm_selfplay.model.stream import encode_stream, stream_logits
from stlm_selfplay.model.tokenizer import BOS_ID, PAD_ID
from stlm_selfplay.model.value_head import ValueHead

# Logit given to ids the model never emits (PAD, BOS): exp(-1e4) is 0 in fp32 and bf16, so the
# distribution is exactly the one over bytes + EOS, yet a masked-out PAD target costs a finite NLL.
NEVER_EMITTED_LOGIT = -1e4


@dataclass
class STLMOutput(CausalLMOutput):
    """`logits[:, t]` is the distribution of `input_ids[:, t + 1]`."""

    trunk_states: tuple[torch.Tensor, ...] | None = None  # per trunk layer [B, n_patches, d_model]
    patch_ids: torch.Tensor | None = None  # [B, T] patch index of each byte, -1 for pads
    exit_logits: dict[int, torch.Tensor] | None = None  # {trunk layer: [B, T, V]} when exit_layers asked
    router_logits: tuple[RouterOutput, ...] | None = None  # per routed block when output_router_logits (objective `mod`)
    mtp_logits: tuple[torch.Tensor, ...] | None = None  # multi-token prediction heads (objectives)


def layer_dropout_rates(step: int | None, total_steps: int, n_layers: int, p_max: float) -> list[float]:
    """LayerSkip's per-layer drop rates [p_0 .. p_{L-1}]:

        p_l = S(t) D(l) p_max,   D(l) = exp(l ln2 / (L-1)) - 1,
        S(t) = exp(t ln2 / T) - 1 when pretraining from scratch (step t of T given), else 1.

    The first layer is never dropped (D(0) = 0); a single-layer trunk drops nothing."""
    if n_layers <= 1 or p_max == 0.0:
        return [0.0] * n_layers
    s = 1.0 if step is None else math.exp(step * math.log(2) / max(total_steps, 1)) - 1.0
    return [s * (math.exp(l * math.log(2) / (n_layers - 1)) - 1.0) * p_max for l in range(n_layers)]


class Trunk(nn.Module):
    """The global causal transformer over patch vectors, an explicit loop over layers. Blocks in
    `config.routed_layers` have a Mixture-of-Depths router (`mod.py`)."""

    def __init__(self, config: STLMConfig):
        super().__init__()
        rank = config.lora_rank if config.share_ffn else None
        self.shared_ffn = SwiGLU(config.d_model, config.d_ff) if config.share_ffn else None
        self.layers = nn.ModuleList(
            Block(config.d_model, config.n_heads, config.n_kv_heads, config.d_ff, qk_norm=config.qk_norm,
                  eps=config.norm_eps, dropout=config.dropout, shared_rank=rank, mlp=config.mlp)
            for _ in range(config.n_layers))
        self.routers = nn.ModuleDict({str(l): Router(config.d_model, config.mod_predictor)
                                      for l in config.routed_layers})
        self.norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.rope_theta, self.head_dim = config.rope_theta, config.d_model // config.n_heads
        self.max_len = config.max_patches  # trunk positions are patch indices
        self.mod_options = dict(capacity=config.mod_capacity, router_scale=config.mod_router_scale)
        self.train_routing = config.mod_routing

    def forward(self, x, positions, caches=None, step=None, keep_states=False, layers: range | None = None,
                drop_rates: list[float] | None = None, routing: str | None = None,
                routes: list[RouterOutput] | None = None, attn_mask: torch.Tensor | None = None):
        """x [B, N, d_model] at patch `positions` [1 or B, N] -> (last state, per-layer states or None).

        `layers` runs a sub-range of the trunk (early exit, self-speculative drafting; caches are
        indexed by absolute layer). `drop_rates[l]` (training only) skips layer l for each row
        with that probability (layer dropout): kept rows run the layer, dropped rows pass through.
        `routing` (routed blocks): None = config.mod_routing in training mode, "causal" in eval
        mode and with caches; each routed block appends its `RouterOutput` to `routes` if given
        (under layer dropout, for the rows that ran it: `RouterOutput.rows`). `attn_mask`
        [B, 1, N, N] bool replaces the causal mask (plain blocks only: `shared_prefix.py`)."""
        cos, sin = rope_angles(positions, self.head_dim, self.rope_theta, self.max_len)
        if routing is None:
            routing = self.train_routing if self.training and caches is None else "causal"
        if routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {', '.join(ROUTINGS)}, got {routing!r}")
        states = []
        for i in (range(len(self.layers)) if layers is None else layers):
            cache = None if caches is None else caches[i]
            rate = drop_rates[i] if drop_rates is not None and self.training else 0.0
            if rate > 0.0:
                kept = (torch.rand(x.shape[0], device=x.device) >= rate).nonzero().squeeze(1)
                rows = (lambda t: t) if cos.shape[0] == 1 else (lambda t: t[kept])
                x = x.index_copy(0, kept, self.block(i, x[kept], rows(cos), rows(sin), routing=routing, routes=routes,
                                                     rows=kept))
            else:
                x = self.block(i, x, cos, sin, cache, step, routing, routes, attn_mask=attn_mask)
            if keep_states:
                states.append(x)
        return x, (tuple(states) if keep_states else None)

    def block(self, i: int, x, cos, sin, cache=None, step=None, routing: str = "causal",
              routes: list[RouterOutput] | None = None, rows: torch.Tensor | None = None,
              attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Trunk layer i on x (batch `rows` of the whole, None = all): the plain block, or through
        its router (`mod.routed_block`)."""
        layer = self.layers[i]
        if str(i) not in self.routers:
            return layer(x, cos, sin, cache, step, shared_ffn=self.shared_ffn, attn_mask=attn_mask)
        x, report = routed_block(self.routers[str(i)], layer, x, cos, sin, cache, step, routing=routing,
                                 shared_ffn=self.shared_ffn, **self.mod_options)
        if routes is not None:
            report.rows = rows
            routes.append(report)
        return x


class STLMPreTrainedModel(PreTrainedModel):
    config_class = STLMConfig
    config: STLMConfig
    base_model_prefix = "stlm"
    main_input_name = "input_ids"
    _supports_sdpa = True
    _no_split_modules = ["Block"]

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.RMSNorm):
            nn.init.ones_(module.weight)
        elif isinstance(module, LocalEncoder) and module.query is not None:
            nn.init.zeros_(module.query)
        elif isinstance(module, LocalDecoder):
            nn.init.normal_(module.start, mean=0.0, std=std)


class STLMForCausalLM(STLMPreTrainedModel, GenerationMixin):
    """The byte-pooled causal LM. `forward` follows the Hugging Face causal-LM contract."""

    def __init__(self, config: STLMConfig):
        super().__init__(config)
        self.byte_embed = nn.Embedding(config.vocab_size, config.d_local)
        self.ngram_embed = NgramEmbedding(config) if config.ngram_max else None
        if config.patching == "entropy":  # H(next | last two ids), set by fit_entropy_patching (entropy.py)
            self.register_buffer("entropy_table", torch.zeros(config.vocab_size ** 2))
        self.encoder = LocalEncoder(config)
        self.trunk = Trunk(config)
        self.decoder = LocalDecoder(config)
        # multi-byte prediction: head i (1-based) maps trunk state s_k to the state that conditions
        # patch k+1+i, h_i(s) = s + W_i s (W_i = 0 at init), then the shared norm + decoder + head
        self.mtp_heads = nn.ModuleList(nn.Linear(config.d_model, config.d_model, bias=False)
                                       for _ in range(config.mtp_heads))
        self.lm_head = None if config.tie_embeddings else nn.Linear(config.d_local, config.vocab_size, bias=False)
        self.value_head = ValueHead(config.d_model) if config.value_head else None  # V(s), model/value_head.py
        self.post_init()
        self._zero_init_outputs()

    def _zero_init_outputs(self) -> None:
        """LoRA deltas start at zero (B = 0), so a shared FFN starts identical in every layer;
        multi-byte heads start as the identity (W_i = 0). With `zero_init_proj` every block's
        attention output W_o and FFN down projection start at zero (each block starts as the
        identity, modded-nanogpt)."""
        for head in self.mtp_heads:
            nn.init.zeros_(head.weight)
        for layer in self.trunk.layers:
            if layer.lora is not None:
                nn.init.zeros_(layer.lora.up.weight)
                nn.init.zeros_(layer.lora.down.weight)
        if self.config.zero_init_proj:
            for block in self.modules():
                if isinstance(block, Block):
                    nn.init.zeros_(block.attn.wo.weight)
                    for ffn in (block.ffn, self.trunk.shared_ffn):
                        if ffn is not None:
                            nn.init.zeros_(ffn.w_down.weight)

    def get_input_embeddings(self) -> nn.Module:
        return self.byte_embed

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.byte_embed = value

    def embed_bytes(self, ids: torch.Tensor) -> torch.Tensor:
        """Input byte embeddings, E[ids] * sqrt(d_local): at init they are as large as the trunk
        condition they are added to, so the local modules use the bytes from the start (the
        tied head reads E unscaled, keeping the initial logits small)."""
        return self.byte_embed(ids) * self.config.d_local ** 0.5

    def head_weight(self) -> torch.Tensor:
        return self.byte_embed.weight if self.lm_head is None else self.lm_head.weight

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Decoder hidden states -> logits over the vocabulary, z = m h W^T (m = `logit_scale`),
        soft-capped z -> c tanh(z / c) when `logit_softcap` = c > 0; PAD and BOS, which the model
        never emits, get NEVER_EMITTED_LOGIT. Every path to logits (training, sampling, scoring) uses it."""
        logits = F.linear(hidden, self.head_weight().to(hidden.dtype))
        if self.config.logit_scale != 1.0:
            logits = logits * self.config.logit_scale
        cap = self.config.logit_softcap
        if cap:
            logits = cap * torch.tanh(logits / cap)
        return logits.index_fill(-1, self._never_emitted(logits.device), NEVER_EMITTED_LOGIT)

    def _never_emitted(self, device) -> torch.Tensor:
        if getattr(self, "_never_ids", None) is None or self._never_ids.device != device:
            with torch.inference_mode(False):  # a plain tensor, usable in training after sampling
                self._never_ids = torch.tensor([PAD_ID, BOS_ID], device=device)
        return self._never_ids

    # ------------------------------------------------------------------ building blocks
    def encode_patches(self, enc_ids: torch.Tensor, enc_valid: torch.Tensor,
                       enc_ngrams: torch.Tensor | None = None) -> torch.Tensor:
        """[B, N, Pm] patch bytes (+ their n-gram buckets [B, N, Pm, K]) -> [B, N, d_model] trunk
        inputs; the encoder reads (E[x] + sum_n E_ngram[bucket_n]) * sqrt(d_local) (`ngrams.py`)."""
        batch, n, pm = enc_ids.shape
        h = self.embed_bytes(enc_ids.reshape(batch * n, pm))
        if self.ngram_embed is not None:
            h = h + self.ngram_embed(enc_ngrams.reshape(batch * n, pm, -1)) * self.config.d_local ** 0.5
        return self.encoder(h, enc_valid.reshape(batch * n, pm)).view(batch, n, -1)

    def patch_layout(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> PatchLayout:
        """The patch layout of a batch (`patching.make_layout`), with this model's entropy table."""
        return make_layout(input_ids, attention_mask, self.config, getattr(self, "entropy_table", None))

    def fit_entropy_patching(self, train_ids) -> None:
        """patching: entropy: fit the small byte model's table on a 1-D stream of train ids."""
        from stlm_selfplay.model.entropy import fit_entropy_table

        with torch.no_grad():
            self.entropy_table.copy_(fit_entropy_table(train_ids))

    def encode_layout(self, layout: PatchLayout) -> torch.Tensor:
        """A layout's patches -> trunk inputs [B, N_enc, d_model]. A stream encoder (`stream.encode_stream`)
        also leaves its byte states in `layout.byte_states`, the stream decoder's input."""
        if self.config.encoder_attention == "stream":
            patches, layout.byte_states = encode_stream(self, layout)
            return patches
        return self.encode_patches(layout.enc_ids, layout.enc_valid, layout.enc_ngrams)

    def condition(self, trunk_state: torch.Tensor) -> torch.Tensor:
        """The decoder condition of the patch after a trunk state: c = W_c norm(s)."""
        return self.decoder.cond_proj(self.trunk.norm(trunk_state))

    def conditions(self, trunk_state: torch.Tensor, n_windows: int, delay: int = 0) -> torch.Tensor:
        """Decoder conditions [B, n_windows, d_local]: c_m = W_c norm(s_{m-1-delay}), and
        c_m = W_c start where m - 1 - delay < 0 (delay > 0: multi-byte heads)."""
        start = self.decoder.start.to(trunk_state.dtype).expand(trunk_state.shape[0], 1 + delay, -1)
        cond = torch.cat([start, self.trunk.norm(trunk_state)], dim=1)[:, :n_windows]
        return self.decoder.cond_proj(cond)

    def logits_from_trunk(self, trunk_state: torch.Tensor, layout: PatchLayout, logits_to_keep: int = 0,
                          include_first: bool = False, delay: int = 0, needed: torch.Tensor | None = None):
        """Trunk state [B, N_enc, d_model] -> final norm -> local decoder -> logits [B, T, V].

        The one path from any trunk state to byte logits (final output, per-layer exits and,
        with `delay` = i, multi-byte head i's logits from a state i patches older).
        With `include_first`, [B, T+1, V]: entry u predicts x[u], including x[0] (after BOS).
        `needed` [B, T] bool: only the decoder windows holding these positions' logits run
        (`patching.needed_windows`); logits elsewhere are those of a zero hidden state."""
        batch, n_dec, width = layout.dec_ids.shape
        if self.config.decoder_attention == "stream":
            return stream_logits(self, trunk_state, layout, logits_to_keep, include_first, delay)
        cond, dec_ids = self.conditions(trunk_state, n_dec, delay), layout.dec_ids
        windows = None if needed is None else needed_windows(layout, needed)
        if windows is not None:
            cond, dec_ids = pick_windows(cond, windows), pick_windows(dec_ids, windows)
        k, ctx = dec_ids.shape[1], self.config.dec_context
        emb = self.embed_bytes(dec_ids.reshape(batch * k, width))
        slots = torch.arange(width, device=emb.device)[None]
        # logits are read only at the current patch's slots ctx.. of each window (patching.py): the
        # decoder's last layer runs there only, and the flat read index skips the context slots
        hidden = self.decoder(emb, cond.reshape(batch * k, -1), slots, outputs_from=ctx).view(batch, k, width - ctx, -1)
        if windows is not None:
            hidden = place_windows(hidden, windows, n_dec)
        hidden = hidden.reshape(batch, n_dec * (width - ctx), -1)
        read = layout.read_all if include_first else layout.read_index
        if ctx:
            read = read - (read // width + 1) * ctx
        if logits_to_keep and layout.offsets is None:
            read = read[:, -logits_to_keep:]
        hidden = hidden.gather(1, read.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        logits = unalign(self.head(hidden), layout.offsets)
        if logits_to_keep and layout.offsets is not None:
            logits = logits[:, -logits_to_keep:]
        return logits

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        output_trunk_states: bool = False,
        exit_layers: Sequence[int] | Callable[[int], Sequence[int]] | None = None,
        train_progress: tuple[int, int] | None = None,
        output_mtp_logits: bool = False,
        output_router_logits: bool = False,
        routing: str | None = None,
        prefix_groups: torch.Tensor | None = None,
        logits_needed: torch.Tensor | None = None,
        **kwargs,
    ) -> STLMOutput:
        """input_ids [B, T] -> STLMOutput. Positions come from `attention_mask` (pads get none);
        `position_ids` is accepted for HF compatibility and ignored. `labels` gives the shifted
        cross-entropy  mean_t -log p(labels[:, t+1] | x_<=t)  over labels != -100.

        `exit_layers` (layer indices, or a callable n_layers -> indices, e.g. early_exit's
        ExitPlan) adds `exit_logits` {layer: [B, T, V]}: each exit is layer l's state through the
        shared final norm + local decoder + head (`logits_from_trunk`); the last layer's entry is
        `logits` itself. `train_progress` = (step, total_steps) of a from-scratch run sets layer
        dropout's S(t) (`layer_dropout_rates`); without it S = 1. Layer dropout is on only in
        training mode and only when `config.layer_dropout` > 0. `output_mtp_logits` adds
        `mtp_logits` (one [B, T, V] per multi-byte head, aligned like `logits`: head i's entry t
        predicts input_ids[:, t+1] from the trunk state i patches older than `logits` uses).
        `routing` picks Mixture-of-Depths routing (topk | causal; None = config.mod_routing in
        training mode, causal in eval mode); `output_router_logits` adds `router_logits`, one
        `mod.RouterOutput` per routed block (router logits, top-k mask, predictor logits).
        `prefix_groups` [B] (rows of a group share a prefix, e.g. one turn's actions): the trunk
        reads each group's shared patches once (`shared_prefix.py`, same logits at real bytes);
        ignored with routed layers, layer dropout, exits or trunk states. `logits_needed` [B, T]
        bool: `logits` is exact only at these positions (the decoder skips windows without one)."""
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None  # no padding: skip the alignment gathers
        n_layers = self.config.n_layers
        exits = sorted(set(exit_layers(n_layers) if callable(exit_layers) else exit_layers)) if exit_layers else []
        if any(not 0 <= e < n_layers for e in exits):
            raise ValueError(f"exit_layers {exits} out of range for a trunk of {n_layers} layers")
        drop = None
        if self.training and self.config.layer_dropout > 0:
            step, total = train_progress if train_progress is not None else (None, 1)
            drop = layer_dropout_rates(step, total, n_layers, self.config.layer_dropout)
        layout = self.patch_layout(input_ids, attention_mask)
        routes = [] if output_router_logits else None
        if prefix_groups is not None and not (self.trunk.routers or drop or exits or output_trunk_states
                                              or self.config.encoder_attention == "stream"):
            state, states = shared_prefix_trunk(self, layout, prefix_groups), None
        else:
            patches = self.encode_layout(layout)
            state, states = self.trunk(patches, torch.arange(patches.shape[1], device=patches.device)[None],
                                       keep_states=output_trunk_states or bool(exits), drop_rates=drop,
                                       routing=routing, routes=routes)
        logits = self.logits_from_trunk(state, layout, logits_to_keep, needed=logits_needed)
        exit_logits = None
        if exits:
            exit_logits = {e: logits if e == n_layers - 1 else self.logits_from_trunk(states[e], layout, logits_to_keep)
                           for e in exits}
        mtp_logits = None
        if output_mtp_logits:
            mtp_logits = tuple(self.logits_from_trunk(state + head(state), layout, logits_to_keep, delay=i)
                               for i, head in enumerate(self.mtp_heads, start=1))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                   labels[:, 1:].reshape(-1), ignore_index=-100)
        return STLMOutput(loss=loss, logits=logits, trunk_states=states if output_trunk_states else None,
                          patch_ids=layout.patch_ids, exit_logits=exit_logits, mtp_logits=mtp_logits,
                          router_logits=None if routes is None else tuple(routes))

    # ------------------------------------------------------------------ HF generation (uncached)
    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        """Hugging Face `generate` re-reads the whole sequence each step (no cache); our
        `stlm_selfplay.model.generate` is the fast path."""
        return {"input_ids": input_ids, "attention_mask": attention_mask, "logits_to_keep": 1}

    def _supports_default_dynamic_cache(self) -> bool:  # no HF cache object
        return False

    # ------------------------------------------------------------------ incremental decoding
    def new_caches(self, batch: int, device, dtype) -> tuple[list[LayerCache], list[LayerCache]]:
        """Empty KV caches: trunk (one slot per patch) and local decoder (`new_decoder_caches`)."""
        return self.new_trunk_caches(batch, device, dtype), self.new_decoder_caches(batch, device, dtype)

    def new_trunk_caches(self, batch: int, device, dtype, length: int | None = None) -> list[LayerCache]:
        """Empty trunk KV caches of `length` patches (default: max_patches)."""
        c = self.config
        return [LayerCache(batch, c.n_kv_heads, length or c.max_patches, c.d_model // c.n_heads, device, dtype)
                for _ in range(c.n_layers)]

    def new_encoder_caches(self, batch: int, device, dtype, length: int | None = None) -> list[LayerCache]:
        """`encoder_attention: stream`: empty encoder caches of `length` byte positions (default max_seq_len + 1)."""
        c = self.config
        return [LayerCache(batch, c.local_heads, length or c.max_seq_len + 1, c.d_local // c.local_heads, device, dtype)
                for _ in range(c.n_local_encoder_layers)]

    def new_decoder_caches(self, batch: int, device, dtype, length: int | None = None) -> list[LayerCache]:
        """Empty local decoder caches: one slot per window slot, or with `decoder_attention: stream` one per
        byte position, `length` of them (default: max_seq_len + 1, the BOS and every byte)."""
        c = self.config
        slots = (length or c.max_seq_len + 1) if c.decoder_attention == "stream" else c.dec_window
        return [LayerCache(batch, c.local_heads, slots, c.d_local // c.local_heads, device, dtype)
                for _ in range(c.n_local_decoder_layers)]
