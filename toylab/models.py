"""Tiny models made locally (no hub here): a byte-level tokenizer with a chat template and a random-init
Qwen2 causal LM, both saved with ``save_pretrained`` so the loading code is the same as for real models.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen's ChatML layout, so real and tiny models are prompted the same way.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer(size: int = 0) -> PreTrainedTokenizerFast:
    """Byte-level tokenizer: 256 byte tokens (any text encodes, nothing is unknown) plus 3 specials; with
    ``size``, padded with filler tokens ``<tN>`` to that many entries (a random model at a real vocabulary can
    emit any id, and each must decode). Fillers are plain entries that encoding never produces."""
    byte_chars = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(byte_chars))}
    for s in SPECIALS:
        vocab[s] = len(vocab)
    while len(vocab) < size:
        vocab[f"<t{len(vocab)}>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None
    )
    fast.add_special_tokens({"additional_special_tokens": SPECIALS})
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(
    tokenizer: PreTrainedTokenizerFast,
    *,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
    max_positions: int = 1024,
    seed: int = 0,
    vocab: int = 0,
) -> Qwen2ForCausalLM:
    """A random-init Qwen2-architecture causal LM sized by the arguments. ``vocab`` > the tokenizer's size
    gives the LM head a real vocabulary's cost (benchmarks); ids past the tokenizer decode to nothing."""
    config = Qwen2Config(
        vocab_size=max(len(tokenizer), vocab),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def save_tiny(out_dir: str | Path, seed: int = 0, **sizes: int) -> Path:
    """Build and save the tokenizer and model to ``out_dir`` (written to a temp dir, then renamed)."""
    tok = build_tokenizer()
    model = build_model(tok, seed=seed, **sizes)
    return publish(out_dir, tok, model)


def publish(out_dir: str | Path, tok, model, extra: dict[str, str] | None = None) -> Path:
    """``save_pretrained`` tokenizer and model (plus ``extra`` files) into a temporary directory, then rename
    it to ``out_dir``: readers never see a half-written model. If another process got there first, keep
    theirs."""
    out = Path(out_dir)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save_pretrained(tmp)
    model.save_pretrained(tmp)
    for name, text in (extra or {}).items():
        (tmp / name).write_text(text)
    if out.exists():
        shutil.rmtree(tmp)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)
    return out
