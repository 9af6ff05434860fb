"""Build a bundle without torch: item vectors from co-occurrence (PPMI + truncated SVD).

A baseline that needs nothing but numpy and onnx, useful to see the bundle format end to end and to
compare against trained models. Run from the repository root:

    python examples/build_cooccurrence_bundle.py --data $EDGEREC_DATA_DIR/amazon_beauty --out runs/cooc

The interest model is a recency-weighted mean of the history's item vectors (an ONNX graph), so the
score of an item is a weighted sum of its similarities to what the user touched, newest first.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from edgerec_sdk.bundle import write_bundle
from edgerec_sdk.testing import make_interest_model


def read_dataset(root: Path) -> tuple[list[list[int]], dict[int, str], dict[int, str], int]:
    """Sequences (item ids, oldest first), ASINs and titles of an S3-Rec style folder."""
    seq_file = next(p for p in root.glob("*.txt") if p.name not in ("Video.txt",)) if root.is_dir() else root
    sequences = [[int(x) for x in line.split()[1:]] for line in seq_file.read_text().splitlines() if line.strip()]
    n_items = max(max(s) for s in sequences)
    asin = {i: f"item-{i}" for i in range(1, n_items + 1)}
    titles: dict[int, str] = {}
    if (root / "item_asin.tsv").exists():
        for line in (root / "item_asin.tsv").read_text().splitlines()[1:]:
            i, a = line.split("\t")
            asin[int(i)] = a
    if (root / "item_keywords.tsv").exists():
        for line in (root / "item_keywords.tsv").read_text().splitlines()[1:]:
            i, _, title = line.split("\t")
            titles[int(i)] = title
    return sequences, asin, titles, n_items


def cooccurrence_vectors(train: list[list[int]], n_items: int, dim: int, window: int = 3) -> np.ndarray:
    """PPMI of co-occurrence within ``window`` steps, factorised by a truncated SVD."""
    counts = np.zeros((n_items, n_items), dtype=np.float32)
    for seq in train:
        rows = np.asarray(seq, dtype=np.int64) - 1
        for d in range(1, window + 1):
            a, b = rows[:-d], rows[d:]
            w = 1.0 / d
            np.add.at(counts, (a, b), w)
            np.add.at(counts, (b, a), w)
    total = counts.sum()
    row = counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(counts * total / (row @ row.T))
    ppmi = np.where(np.isfinite(pmi) & (pmi > 0), pmi, 0).astype(np.float32)
    u, s, _ = np.linalg.svd(ppmi, full_matrices=False) if n_items <= 4000 else _randomized_svd(ppmi, dim)
    vectors = u[:, :dim] * np.sqrt(s[:dim])
    return (vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-6)).astype(np.float32)


def _randomized_svd(m: np.ndarray, k: int, oversample: int = 20) -> tuple[np.ndarray, np.ndarray, None]:
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(m @ rng.standard_normal((m.shape[1], k + oversample)).astype(np.float32))
    for _ in range(3):
        q, _ = np.linalg.qr(m @ (m.T @ q))
    u, s, _ = np.linalg.svd(q.T @ m, full_matrices=False)
    return q @ u, s, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--max-seq-len", type=int, default=50)
    args = parser.parse_args()
    started = time.perf_counter()
    sequences, asin, titles, n_items = read_dataset(args.data)
    train = [s[:-1] for s in sequences]  # the last item of every user stays unseen (leave-one-out test)
    vectors = cooccurrence_vectors(train, n_items, args.dim)
    popularity = np.bincount(np.concatenate([np.asarray(s) - 1 for s in train]), minlength=n_items)
    embeddings = np.vstack([np.zeros((1, args.dim), np.float32), vectors])
    model = make_interest_model(embeddings, max_seq_len=args.max_seq_len, recency_decay=0.8)
    out = write_bundle(
        args.out, model_bytes=model, vectors=vectors, vector_dtype="int8",
        catalog_ids=[asin[i] for i in range(1, n_items + 1)],
        catalog_columns={"title": [titles.get(i) for i in range(1, n_items + 1)]},
        popular=np.argsort(-popularity, kind="stable"), max_seq_len=args.max_seq_len,
        extra={"method": "cooccurrence-ppmi-svd", "source": str(args.data.name)}, overwrite=True,
    )
    print(f"wrote {out} in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
