"""Training: full-softmax SASRec with early stopping on validation NDCG@10.

The recipe (docs/build.md explains the choices), ``TrainConfig.fit``:

* ``"single"`` (default): one fit. A random sample of the users (``holdout_share``, at least ``holdout_min``
  or half of them) trains on ``seq[:-2]`` and scores its validation item after every epoch; every other user trains on
  ``seq[:-1]``, the validation item included (the test item never). The best epoch's state is exported.
* ``"refit"`` (the earlier recipe): a *search fit* on ``seq[:-2]`` of every user picks the epoch count ``E``
  by validation NDCG@10, then a fresh model with the same seed trains on ``seq[:-1]`` for ``E`` epochs.
  Twice the epochs for the same test quality (docs/quality.md, "Build times").
* ``"search"``: the search fit alone (the published protocol: validation items never trained on).

Validation and export see an exponential moving average of the weights over about one epoch of steps
(``average_epochs``), not the last step's weights; the refit keeps the average at its last epoch.

Each fit stops after ``patience`` epochs without improvement and trains on every prefix of its sequences
with one full-softmax target at the newest position (``samples="prefixes"``), in batches of equal-length
rows, so an epoch computes almost no padding. A user's negatives (non-clicked impressions and explicit
negatives of an event log) are hard negatives in that user's rows: each counts ``1 + negative_boost`` times
in the softmax denominator.

Example:
    >>> result = train(split, n_items, TrainConfig(max_epochs=2))   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from ..errors import ConfigError
from .averaging import WeightAverage
from .data import Split
from .metrics import metrics_from_ranks
from .model import SASRec, sample_queries
from .samples import SAMPLE_MODES, length_batches, negative_index, pad_left, sample_weights, training_samples
from .softmax import softmax_loss

logger = logging.getLogger(__name__)

__all__ = ["DEVICES", "FIT_MODES", "TrainConfig", "TrainResult", "evaluate_torch", "fit", "resolve_device", "train"]

#: ``TrainConfig.device`` values: ``auto`` picks CUDA when torch sees a GPU, else the CPU.
DEVICES = ("cpu", "cuda", "auto")
#: ``TrainConfig.fit`` values (see the module docstring).
FIT_MODES = ("single", "refit", "search")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Hyperparameters; the defaults are the one set used for every data set."""

    dim: int = 64  #: hidden size and item vector size
    n_layers: int = 2  #: transformer blocks
    n_heads: int = 1  #: attention heads
    dropout: float = 0.5  #: dropout rate
    max_len: int = 50  #: history length read by the model
    #: "prefixes": every prefix of a sequence is a row with one target, the next item, at the newest
    #: position; "sequences": one row per user with a target at every position (the earlier recipe)
    samples: str = "prefixes"
    batch_size: int = 256  #: rows per step
    #: 0: batches of equal-length rows (one global sort); n: sort inside random pools of n batches
    length_pool: int = 0
    lr: float = 1e-3  #: Adam learning rate
    weight_decay: float = 0.0  #: Adam weight decay
    max_epochs: int = 200  #: upper bound for the search fit
    patience: int = 5  #: epochs without validation improvement before stopping
    #: the validation score that stops and picks the epoch is NDCG@10 averaged over this many latest epochs:
    #: on a held-out sample of ~2k users it moves by +-0.002 epoch to epoch (the model's own step noise), so
    #: one lucky epoch stopped a Beauty fit at epoch 13 with its best at 8, far short of the plateau
    valid_window: int = 3
    min_epochs: int = 1  #: never stop before this
    fit: str = "single"  #: "single", "refit" or "search" (the module docstring says what each does)
    #: "single": the share of the users with a validation item held out to choose the epoch (they train on
    #: seq[:-2]); at least ``holdout_min`` of them, but no more than half the users for that minimum
    holdout_share: float = 0.1
    holdout_min: int = 1000
    seed: int = 42  #: torch / numpy seed
    threads: int = 2  #: torch intra-op threads (CPU)
    device: str = "cpu"  #: "cpu", "cuda" or "auto" (CUDA when torch sees a GPU)
    eval_batch: int = 2048  #: users per scoring batch during validation
    #: weight of the text tower's query objective (models with item text only; 0 turns it off): a random
    #: part of each target item's tokens must retrieve that item by full softmax, so a title-word query
    #: lands near its items
    query_weight: float = 0.1
    query_keep: float = 0.3  #: share of an item's tokens kept in its pseudo query
    #: rows of each batch whose target's pseudo query is trained (0: every row). The query softmax cost as much
    #: as the next-item one, a third of an epoch with text; a quarter of the rows keeps a quarter of that
    query_rows: int = 64
    #: how hard a user's negatives (items shown and never engaged with, explicit negatives; event logs only)
    #: are pushed down in that user's rows: each counts 1 + negative_boost times in the softmax denominator
    #: (log(1 + negative_boost) is added to its logit, never to the target's), so at the optimum the user's
    #: odds of the item are divided by 1 + negative_boost; 0 turns it off
    negative_boost: float = 1.0
    #: validate and export an exponential moving average of the weights over about this many epochs of
    #: steps instead of the last step's weights (0: the raw weights). At a constant learning rate with
    #: dropout 0.5 the raw weights jitter around the optimum; their average sits nearer it (Beauty, all
    #: users' validation: best NDCG@10 0.0727 -> 0.0751) and moves less epoch to epoch
    average_epochs: float = 1.0

    def __post_init__(self) -> None:
        for name in ("dim", "n_layers", "n_heads", "max_len", "batch_size", "max_epochs", "threads", "valid_window"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"{name} must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout must be in [0, 1)")
        if self.samples not in SAMPLE_MODES:
            raise ConfigError(f"samples must be one of {', '.join(SAMPLE_MODES)}")
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {', '.join(DEVICES)}")
        if self.length_pool < 0:
            raise ConfigError("length_pool must be >= 0")
        if self.query_weight < 0 or not 0.0 < self.query_keep <= 1.0 or self.query_rows < 0:
            raise ConfigError("query_weight and query_rows must be >= 0 and query_keep in (0, 1]")
        if self.fit not in FIT_MODES:
            raise ConfigError(f"fit must be one of {', '.join(FIT_MODES)}")
        if not 0.0 <= self.holdout_share <= 1.0 or self.holdout_min < 1:
            raise ConfigError("holdout_share must be in [0, 1] and holdout_min >= 1")
        if not (math.isfinite(self.negative_boost) and self.negative_boost >= 0):
            raise ConfigError("negative_boost must be a finite number >= 0")
        if not (math.isfinite(self.average_epochs) and self.average_epochs >= 0):
            raise ConfigError("average_epochs must be a finite number >= 0")


@dataclass
class TrainResult:
    """The final model and what happened on the way."""

    model: SASRec
    best_epoch: int
    history: dict[str, list[float]] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    """The torch device for ``TrainConfig.device``; ``cuda`` without a usable GPU is a :class:`ConfigError`."""
    if name not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, not {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda: torch sees no CUDA GPU (torch built without CUDA, no driver, or "
            "CUDA_VISIBLE_DEVICES empty); use --device cpu or auto"
        )
    return torch.device(name)


def tune_allocator() -> None:
    """Keep freed memory in the process (glibc only; best effort, build processes only).

    Why: the training loop allocates and frees the same large blocks every step; returning them to the OS
    and faulting them back in costs more than the arithmetic on a small VM.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD: the largest value glibc accepts
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
        libc.mallopt(-2, 256 << 20)  # M_TOP_PAD
    except (OSError, AttributeError):  # not glibc
        logger.debug("mallopt unavailable; allocator left as is")


@torch.no_grad()
def evaluate_torch(
    model: SASRec,
    histories: Sequence[NDArray[np.int64]],
    targets: NDArray[np.int64],
    *,
    batch: int = 2048,
) -> dict[str, float]:
    """Full-ranking metrics of the torch model (history rows excluded), used for early stopping."""
    model.eval()
    table = model.item_table()
    vectors = table[1:]
    device = table.device
    ranks: list[NDArray[np.int64]] = []
    for start in range(0, len(histories), batch):
        hist = histories[start : start + batch]
        x = torch.from_numpy(pad_left(hist, model.max_len)).to(device)
        interest = model.encode(x, table)[:, -1, :]
        scores = interest @ vectors.T
        ranks.append(_torch_ranks(scores, torch.from_numpy(targets[start : start + batch]).to(device), hist))
    return metrics_from_ranks(np.concatenate(ranks) if ranks else np.zeros(0, dtype=np.int64))


def _torch_ranks(
    scores: torch.Tensor, targets: torch.Tensor, hist: Sequence[NDArray[np.int64]]
) -> NDArray[np.int64]:
    """The same pessimistic ranks as :func:`metrics.ranks_from_scores`, in torch (faster on 2 threads)."""
    b, device = scores.shape[0], scores.device
    rows = torch.arange(b, device=device)
    t = scores[rows, targets].clone()
    width = max((len(h) for h in hist), default=0)
    full = torch.cat([torch.zeros(b, 1, dtype=scores.dtype, device=device), scores], dim=1)
    if width:
        ex = torch.from_numpy(pad_left(hist, width)).to(device)  # row r at column r + 1, padding at column 0
        full.scatter_(1, ex, float("-inf"))
    full[rows, targets + 1] = float("-inf")
    ranks = (full[:, 1:] >= t.unsqueeze(1)).sum(dim=1)
    ranks[~torch.isfinite(t)] = scores.shape[1]
    return ranks.cpu().numpy().astype(np.int64)


def _make_model(n_items: int, cfg: TrainConfig, item_tokens: torch.Tensor | None, vocab: int) -> SASRec:
    torch.manual_seed(cfg.seed)
    return SASRec(
        n_items,
        dim=cfg.dim,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        dropout=cfg.dropout,
        max_len=cfg.max_len,
        item_tokens=item_tokens,
        vocab_size=vocab,
    )


def _query_loss(model: SASRec, table: torch.Tensor, targets: torch.Tensor, gen: torch.Generator,
                cfg: TrainConfig, chunk: int) -> torch.Tensor:
    """The text tower's objective: a pseudo query from each target item's tokens retrieves that item."""
    if cfg.query_rows and len(targets) > cfg.query_rows:
        targets = targets[torch.randperm(len(targets), generator=gen)[: cfg.query_rows].to(targets.device)]
    tokens = model.item_tokens[targets]
    has_text = (tokens > 0).any(dim=1)
    if not bool(has_text.any()):
        return table.new_zeros(())
    q = model.text_vector(sample_queries(tokens[has_text], keep=cfg.query_keep, generator=gen))
    return softmax_loss(q, table[1:], targets[has_text] - 1, chunk)


NegativeIndex = tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]
"""What :func:`~edgerec_sdk.train.samples.negative_index` returns: ``(row_user, offsets, items)``."""


def _batch_negatives(index: NegativeIndex, idx: NDArray[np.int64], sel: NDArray[np.bool_],
                     target: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]] | None:
    """``(positions, items)``: each selected target position of the batch (``sel`` row-major, as ``h[sel]``
    orders them) paired with its user's negatives, the position's own ``target`` left out; ``None`` when
    there are none. Vectorised: a batch's pairs are gathered from the per-user lists in a few numpy ops."""
    row_user, offsets, items = index
    users = row_user[idx[np.nonzero(sel)[0]]]
    counts = offsets[users + 1] - offsets[users]
    total = int(counts.sum())
    if total == 0:
        return None
    pos = np.repeat(np.arange(len(users), dtype=np.int64), counts)
    # pair k of position p reads items[offsets[user p] + (k - first pair of p)]
    at = np.repeat(offsets[users] - (np.cumsum(counts) - counts), counts) + np.arange(total, dtype=np.int64)
    cols = items[at]
    keep = cols != target[pos]
    return (pos[keep], cols[keep]) if bool(keep.any()) else None


def fit(
    seqs: Sequence[NDArray[np.int64]],
    n_items: int,
    cfg: TrainConfig,
    *,
    epochs: int,
    validate: Callable[[SASRec], float] | None = None,
    item_tokens: torch.Tensor | None = None,
    vocab_size: int = 0,
    progress: bool = True,
    desc: str = "train",
    weights: Sequence[NDArray[np.float32]] | None = None,
    negatives: Sequence[NDArray[np.int64]] | None = None,
) -> tuple[SASRec, dict[str, list[float]], int, dict[str, Any] | None]:
    """Train for up to ``epochs``; with ``validate`` stop early and return the best state.

    ``weights`` (per event, aligned with ``seqs``) weight each next-item target in the loss; ``None`` trains
    unweighted. ``negatives`` (per user, item rows) are hard negatives of that user's rows, boosted by
    ``cfg.negative_boost``; ``None`` (or a boost of 0) trains exactly as without them.

    Returns ``(model, history, best_epoch, best_state)``; the model holds the best state on return.
    """
    from tqdm.auto import tqdm

    device = resolve_device(cfg.device)
    torch.set_num_threads(cfg.threads)
    model = _make_model(n_items, cfg, item_tokens, vocab_size).to(device)
    # fused: one kernel per step instead of ~10 per parameter (2 % of a CPU epoch)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay,
                           fused=True)
    inputs, targets, lengths = training_samples(seqs, cfg.max_len, mode=cfg.samples)
    target_w = None if weights is None else sample_weights(seqs, weights, cfg.max_len, mode=cfg.samples)
    if len(inputs) == 0:
        raise ConfigError("no user has two or more training items")
    neg_index = None
    if negatives is not None and cfg.negative_boost > 0:
        neg_index = negative_index(seqs, negatives, mode=cfg.samples)
    offset = math.log1p(cfg.negative_boost)
    rng = np.random.default_rng(cfg.seed)
    chunk = max(64, (1 << 22) // max(n_items, 1))
    queries = torch.Generator().manual_seed(cfg.seed) if model.token_emb is not None and cfg.query_weight else None
    hist: dict[str, list[float]] = {"loss": [], "valid_ndcg10": [], "epoch_s": []}
    avg: WeightAverage | None = None
    best, best_epoch, best_state, bad = -1.0, epochs, None, 0
    bar = tqdm(total=epochs, desc=desc, unit="epoch", disable=not progress, dynamic_ncols=True)
    try:
        for epoch in range(1, epochs + 1):
            model.train()
            t0 = time.perf_counter()
            total = 0.0
            batches = length_batches(lengths, cfg.batch_size, rng, pool=cfg.length_pool or None)
            if avg is None and cfg.average_epochs > 0:
                avg = WeightAverage(model, cfg.average_epochs * len(batches))
            for idx in batches:
                width = int(lengths[idx].max())
                x = torch.from_numpy(inputs[idx, -width:]).to(device)
                # targets are right-aligned with the inputs: one column (prefixes) or one per position
                y_np = targets[idx, -min(width, targets.shape[1]) :]
                y = torch.from_numpy(y_np).to(device)
                table = model.item_table()
                sel = y > 0
                w = None if target_w is None else torch.from_numpy(target_w[idx, -y.shape[1] :]).to(device)[sel]
                negs = None
                if neg_index is not None:
                    pairs = _batch_negatives(neg_index, idx, y_np > 0, y_np[y_np > 0] - 1)
                    if pairs is not None:
                        negs = (torch.from_numpy(pairs[0]).to(device), torch.from_numpy(pairs[1]).to(device))
                h = model.encode(x, table, newest_only=y.shape[1] == 1)[:, -y.shape[1] :]
                loss = softmax_loss(h[sel], table[1:], y[sel] - 1, chunk, w, negs, offset)
                if queries is not None:
                    loss = loss + cfg.query_weight * _query_loss(model, table, y[:, -1], queries, cfg, chunk)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if avg is not None:
                    avg.update()
                total += float(loss.detach())
            hist["loss"].append(total / len(batches))
            hist["epoch_s"].append(time.perf_counter() - t0)
            post = {"loss": f"{hist['loss'][-1]:.4f}"}
            if avg is not None:
                avg.swap()  # validate (and keep) the averaged weights; swapped back before the next epoch
            if validate is not None:
                hist["valid_ndcg10"].append(validate(model))
                window = hist["valid_ndcg10"][-cfg.valid_window :]
                score = sum(window) / len(window)
                post["val_ndcg10"] = f"{hist['valid_ndcg10'][-1]:.4f}"
                if score > best:
                    best, best_epoch, bad = score, epoch, 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    bad += 1
                logger.info("%s epoch %d loss %.4f valid NDCG@10 %.4f (mean of the last %d: %.4f)", desc, epoch,
                            hist["loss"][-1], hist["valid_ndcg10"][-1], len(window), score)
            else:
                logger.info("%s epoch %d loss %.4f", desc, epoch, hist["loss"][-1])
            bar.set_postfix(post)
            bar.update(1)
            stop = validate is not None and epoch >= cfg.min_epochs and bad >= cfg.patience
            if stop or epoch == epochs:
                break  # with an average, the model keeps the averaged weights
            if avg is not None:
                avg.swap()
    finally:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    return model, hist, best_epoch, best_state


def holdout_users(valid_users: NDArray[np.int64], cfg: TrainConfig) -> NDArray[np.int64]:
    """The users whose validation item chooses the epoch of a ``"single"`` fit (sorted): a seeded random
    ``holdout_share`` of ``valid_users``, at least ``holdout_min`` of them but never more than half for that
    minimum (a small store keeps its most recent events for training in at least half its users)."""
    floor = min(cfg.holdout_min, len(valid_users) // 2)
    n = min(len(valid_users), max(floor, math.ceil(cfg.holdout_share * len(valid_users))))
    picked = np.random.default_rng(cfg.seed).choice(len(valid_users), size=n, replace=False)
    return np.sort(valid_users[picked])


def _mixed(held: NDArray[np.bool_], short: Sequence[Any] | None, full: Sequence[Any] | None) -> list[Any] | None:
    """Per user: the ``seq[:-2]`` version where ``held``, else the ``seq[:-1]`` one."""
    if short is None or full is None:
        return None
    return [short[u] if held[u] else full[u] for u in range(len(held))]


def train(
    split: Split,
    n_items: int,
    cfg: TrainConfig | None = None,
    *,
    item_tokens: NDArray[np.int64] | None = None,
    vocab_size: int = 0,
    progress: bool = True,
) -> TrainResult:
    """Train as ``cfg.fit`` says (module docstring) and return the model to export."""
    cfg = cfg or TrainConfig()
    tokens = torch.from_numpy(item_tokens) if item_tokens is not None else None
    common: dict[str, Any] = {"item_tokens": tokens, "vocab_size": vocab_size, "progress": progress}
    if cfg.fit == "single":
        in_holdout = np.isin(split.valid_users, holdout_users(split.valid_users, cfg))
        chosen, targets = split.valid_users[in_holdout], split.valid_targets[in_holdout]
        held = np.zeros(len(split.train), dtype=bool)
        held[chosen] = True
        seqs = _mixed(held, split.train, split.train_full) or []
        weights = _mixed(held, split.train_weights, split.train_full_weights)
        negatives = _mixed(held, split.train_negatives, split.train_full_negatives)
        desc = "fit"
    else:
        chosen, seqs, desc = split.valid_users, split.train, "search"
        weights, negatives, targets = split.train_weights, split.train_negatives, split.valid_targets
    valid_hist = [split.train[u] for u in chosen]

    def validate(model: SASRec) -> float:
        return evaluate_torch(model, valid_hist, targets, batch=cfg.eval_batch)["NDCG@10"]

    t0, c0 = time.perf_counter(), time.process_time()
    model, hist, best_epoch, _ = fit(seqs, n_items, cfg, epochs=cfg.max_epochs,
                                     validate=validate if len(valid_hist) else None, desc=desc,
                                     weights=weights, negatives=negatives, **common)
    t_first = time.perf_counter() - t0
    history: dict[str, list[float]] = {f"{desc}_{k}": v for k, v in hist.items()}
    timings = {f"{desc}_s": t_first, f"{desc}_cpu_s": time.process_time() - c0}
    if cfg.fit == "refit":
        t1, c1 = time.perf_counter(), time.process_time()
        model, hist2, _, _ = fit(split.train_full, n_items, cfg, epochs=best_epoch, desc="refit",
                                 weights=split.train_full_weights, negatives=split.train_full_negatives, **common)
        timings["refit_s"] = time.perf_counter() - t1
        timings["refit_cpu_s"] = time.process_time() - c1
        history.update({f"refit_{k}": v for k, v in hist2.items() if v})
    model.cpu().eval()  # export and evaluation run on the CPU
    logger.info("trained (%s): best epoch %d of %d, %s fit %.0f s, refit %.0f s, %d validation users",
                cfg.fit, best_epoch, len(hist["loss"]), desc, t_first, timings.get("refit_s", 0.0), len(chosen))
    return TrainResult(
        model=model,
        best_epoch=best_epoch,
        history=history,
        timings_s=timings,
        config={**dataclasses.asdict(cfg), "device": resolve_device(cfg.device).type,
                "validation_users": len(chosen)},
    )
