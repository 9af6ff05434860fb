"""The SASRec-style interest encoder (torch).

Why this shape (see docs/build.md): a causal transformer over the last ``max_len`` items, hidden 64, two
blocks, one head, dropout 0.5 (``TrainConfig``), with the item embedding table shared between input and
output, trained with a full softmax cross-entropy over every item. On the Amazon review sets a softmax over the catalog beats
binary cross-entropy with one sampled negative by a wide margin, and at ~12k-24k items the full softmax is
cheap on a CPU, so no sampling is needed.

Items may also carry text tokens (titles, attributes) from a tokenizer trained at build time; their mean
token embedding is added to the id embedding, so an item with few or no training events still gets a vector
from its text. The item table is a plain function of the parameters, so the exported ONNX model stores it as
one constant.

The module is imported only by the build pipeline (never by the runtime), so it imports torch at the top.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ExportWrapper", "SASRec", "sample_queries"]


class _Dropout(nn.Module):
    """Inverted dropout whose mask costs less on a CPU.

    Why: torch's CPU dropout draws one Mersenne-Twister number per element, ~10 ms for a [256, 50, 64]
    activation on this project's 2-core machine and 11 % of a Beauty epoch with text (profiled). Here each
    element gets one random byte from numpy's PCG64 (~0.5 ms); the drop probability is rounded to 1/256 and the
    scale follows the rounded value, so the expectation is exact. The generator is seeded from torch's, so
    ``torch.manual_seed`` still fixes a run. On a GPU torch's own dropout is fast and is used.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.cut = min(round(p * 256), 255)  # bytes below ``cut`` drop their element
        self._rng: np.random.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.cut == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        if self._rng is None:
            self._rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        raw = np.frombuffer(self._rng.bytes(x.numel()), dtype=np.uint8).reshape(x.shape)
        mask = torch.from_numpy(raw >= self.cut).to(x.dtype).mul_(256.0 / (256 - self.cut))
        return x * mask


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = 1.0 / math.sqrt(dim // heads)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.drop = _Dropout(dropout)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, d = query.shape  # d == heads * head_dim
        m = keys.shape[1]  # n == m, or n == 1 for the newest position alone
        h, hd = self.heads, self.head_dim
        q = self.q(query).view(b, n, h, hd).transpose(1, 2)
        k = self.k(keys).view(b, m, h, hd).transpose(1, 2)
        v = self.v(keys).view(b, m, h, hd).transpose(1, 2)
        att = torch.matmul(q, k.transpose(-1, -2)) * self.scale + bias
        att = self.drop(torch.softmax(att, dim=-1))
        y = torch.matmul(att, v).transpose(1, 2).reshape(b, n, d)
        out: torch.Tensor = self.out(y)
        return out


class _Block(nn.Module):
    """One SASRec block (the layout of the reference PyTorch port: normed query, residual, point-wise FFN)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(dim, eps=1e-8)
        self.attn = _Attention(dim, heads, dropout)
        self.ln_ffn = nn.LayerNorm(dim, eps=1e-8)
        self.ffn = nn.Sequential(
            nn.Linear(dim, dim), _Dropout(dropout), nn.ReLU(), nn.Linear(dim, dim), _Dropout(dropout)
        )

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor, keep: torch.Tensor, *, newest_only: bool = False
    ) -> torch.Tensor:
        q = self.ln_attn(x)
        if newest_only:  # the newest position's query side alone; keys and values still read every position
            q, bias, keep = q[:, -1:], bias[:, :, -1:], keep[:, -1:]
        x = q + self.attn(q, x, bias)
        x = self.ln_ffn(x)
        x = x + self.ffn(x)
        return x * keep


class SASRec(nn.Module):
    """Causal self-attention encoder over left-padded item histories (row r fed as r + 1, 0 = padding).

    Args:
        n_items: catalog size (rows).
        dim: hidden size (also the item vector size).
        n_layers: transformer blocks.
        n_heads: attention heads.
        dropout: dropout rate on embeddings, attention and FFN.
        max_len: the history length the model reads (the newest ``max_len`` items).
        item_tokens: optional ``[n_items + 1, T]`` int64 token ids per input id (row 0 and padding are 0).
        vocab_size: size of the token vocabulary when ``item_tokens`` is given.
    """

    # Buffers registered in __init__; declared so the checker sees tensors, not nn.Module's
    # ``Tensor | Module`` attribute fallback. ``item_tokens`` exists only when ``token_emb`` does.
    item_tokens: torch.Tensor
    causal: torch.Tensor

    def __init__(
        self,
        n_items: int,
        *,
        dim: int = 64,
        n_layers: int = 2,
        n_heads: int = 1,
        dropout: float = 0.3,
        max_len: int = 50,
        item_tokens: torch.Tensor | None = None,
        vocab_size: int = 0,
    ) -> None:
        super().__init__()
        self.n_items = n_items
        self.dim = dim
        self.max_len = max_len
        self.item_emb = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.pos_emb = nn.Embedding(max_len, dim)
        self.drop = _Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(dim, n_heads, dropout) for _ in range(n_layers))
        self.ln_out = nn.LayerNorm(dim, eps=1e-8)
        self.token_emb: nn.Embedding | None = None
        self._text_mix: tuple[torch.Tensor, torch.Tensor] | None = None  # see _text_table; not saved
        if item_tokens is not None:
            if item_tokens.shape[0] != n_items + 1 or vocab_size <= 0:
                raise ValueError("item_tokens must have n_items + 1 rows and vocab_size must be > 0")
            self.register_buffer("item_tokens", item_tokens.long(), persistent=True)
            self.token_emb = nn.Embedding(vocab_size, dim, padding_idx=0)
            nn.init.normal_(self.token_emb.weight, std=0.02)
            with torch.no_grad():
                self.token_emb.weight[0].zero_()
        nn.init.normal_(self.item_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        causal = torch.triu(torch.ones(max_len, max_len, dtype=torch.bool), diagonal=1)
        self.register_buffer("causal", causal, persistent=False)

    def text_vector(self, tokens: torch.Tensor) -> torch.Tensor:
        """The text tower: the mean embedding of the non-padding tokens, ``[batch, dim]`` (zero for none).

        The same function gives an item's text part (inside :meth:`item_table`), a query's vector and, on
        the edge, the vector of an item added after the build, so all three live in the item-vector space.
        """
        if self.token_emb is None:
            raise ValueError("this model has no text tower (built without item text)")
        mask = (tokens > 0).unsqueeze(-1).to(self.token_emb.weight.dtype)
        summed = (self.token_emb(tokens) * mask).sum(1)
        out: torch.Tensor = summed / mask.sum(1).clamp(min=1.0)
        return out

    def _text_table(self) -> torch.Tensor:
        """:meth:`text_vector` of every item row at once, as one sparse product: a row-normalised item x token
        incidence matrix times the token table. The same means, but training recomputes them every step for
        the full softmax, and gathering ``[n_items, T, dim]`` embeddings forward and scattering them back
        cost most of an epoch with text on a CPU (see docs/quality.md, "Epoch time")."""
        if self.token_emb is None:
            raise ValueError("this model has no text tower (built without item text)")
        tokens = self.item_tokens
        if self._text_mix is None or self._text_mix[0].device != tokens.device:
            present = tokens > 0
            rows = torch.arange(tokens.shape[0], device=tokens.device).unsqueeze(1).expand_as(tokens)[present]
            counts = present.sum(1).clamp(min=1).to(self.token_emb.weight.dtype)
            # a token twice in one row is summed twice by coalesce, as the mean of text_vector counts it
            mix = torch.sparse_coo_tensor(torch.stack([rows, tokens[present]]), 1.0 / counts[rows],
                                          (tokens.shape[0], self.token_emb.num_embeddings),
                                          check_invariants=True).coalesce()
            with warnings.catch_warnings():  # torch notes that CSR support is "beta" on every conversion
                warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta", UserWarning)
                self._text_mix = (mix.to_sparse_csr(), mix.t().coalesce().to_sparse_csr())
        out: torch.Tensor = _SparseMix.apply(self.token_emb.weight, *self._text_mix)  # type: ignore[no-untyped-call]
        return out

    def item_table(self) -> torch.Tensor:
        """``[n_items + 1, dim]`` item representations; row 0 (padding) is zero."""
        table = self.item_emb.weight
        if self.token_emb is not None:
            table = table + self._text_table()
        keep = torch.ones_like(table[:, :1])
        keep[0] = 0.0
        return table * keep

    def encode(self, history: torch.Tensor, table: torch.Tensor, *, newest_only: bool = False) -> torch.Tensor:
        """Hidden states ``[batch, L, dim]`` for a left-padded ``history`` ``[batch, L]`` (L <= max_len).

        ``newest_only``: ``[batch, 1, dim]``, the newest position alone, with the same values; the last block
        then skips the query side of every other position (training rows with one target need no more).
        """
        length = history.shape[1]
        x = F.embedding(history, table) * math.sqrt(self.dim)
        x = x + self.pos_emb.weight[self.max_len - length :].unsqueeze(0)
        x = self.drop(x)
        keep = (history > 0).unsqueeze(-1).to(x.dtype)
        x = x * keep
        causal = self.causal[self.max_len - length :, self.max_len - length :]
        pad_key = (history == 0).unsqueeze(1)  # [b, 1, L]
        bias = (causal.unsqueeze(0) | pad_key).to(x.dtype) * -1e9
        bias = bias.unsqueeze(1)  # [b, 1(heads), L, L]
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, bias, keep, newest_only=newest_only and i == last)
        normed: torch.Tensor = self.ln_out(x)
        return normed * (keep[:, -1:] if newest_only else keep)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        """The interest vector (hidden state at the newest position), ``[batch, dim]``."""
        return self.encode(history, self.item_table())[:, -1, :]

    def item_vectors(self) -> torch.Tensor:
        """The output item vectors, ``[n_items, dim]`` (row r = item row r)."""
        return self.item_table()[1:]


class _SparseMix(torch.autograd.Function):
    """``mix @ weight`` with CSR matrices both ways: the forward product, and the transpose kept ready for the
    backward one (torch's own sparse-dense product is ~2.5x slower on a CPU, its backward transposes COO)."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, mix: torch.Tensor, mix_t: torch.Tensor) -> torch.Tensor:
        ctx.mix_t = mix_t
        out: torch.Tensor = mix @ weight
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return ctx.mix_t @ grad, None, None


def sample_queries(tokens: torch.Tensor, *, keep: float, generator: torch.Generator) -> torch.Tensor:
    """Pseudo search queries for the text tower's training: a random part of each item's own tokens.

    Each non-padding token is kept with probability ``keep``, and at least one per row, so a query looks like
    the two or three title words a shopper types. Rows without tokens stay empty (their loss is skipped).
    """
    present = tokens > 0
    scores = torch.rand(tokens.shape, generator=generator).to(tokens.device)  # a CPU generator, any device
    kept = present & (scores < keep)
    best = torch.where(present, scores, torch.full_like(scores, 2.0)).argmin(dim=1, keepdim=True)
    kept.scatter_(1, best, True)
    return torch.where(kept & present, tokens, torch.zeros_like(tokens))


class ExportWrapper(nn.Module):
    """The encoder with its item table frozen into a buffer: one clean graph for ONNX export.

    With a text tower the graph also takes ``query`` token ids and returns their text vector next to the
    interest; the runtime blends the two (the blend is a serving setting, not baked into the graph).
    """

    table: torch.Tensor  # a buffer registered in __init__

    def __init__(self, model: SASRec) -> None:
        super().__init__()
        self.model = model
        with torch.no_grad():
            self.register_buffer("table", model.item_table().detach().clone())

    def forward(self, history: torch.Tensor, query: torch.Tensor | None = None) -> Any:
        interest = self.model.encode(history, self.table)[:, -1, :]
        if query is None:
            return interest
        return interest, self.model.text_vector(query)
