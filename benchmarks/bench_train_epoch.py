"""Training epoch time by how rows are cut and batched (JSON lines), peers side by side in one process.

Variants, each on ``seq[:-2]`` of the data file (the search fit's rows), trained from the same seed:

* ``sequences-pool50``: one row per user, a target at every position, users sorted by length inside random
  pools of 50 batches of 128 (the earlier recipe);
* ``prefixes-random``: every prefix with one target at the newest position, random batches of 256 (each runs
  at its longest row's width, as in the published recipe's code);
* ``prefixes-sorted``: the same rows in batches of equal length (the default);
* with ``--titles``/``--attributes``, two more: ``text-sparse`` (``prefixes-sorted`` with the text tower, every
  item's text part computed as one sparse product, the default) and ``text-gather`` (the same model computing
  it by gathering every item's token embeddings, as before).

Each line gives the rows, the softmax targets, the positions the encoder computes per epoch, the share of
them that is padding, and the seconds per epoch (median over ``--epochs``). Wall time depends on what else
runs: the machine line records the load.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_train_epoch.py --data $EDGEREC_DATA_DIR/amazon_beauty/Beauty.txt \\
        --threads 1 --epochs 1 [--titles .../item_keywords.tsv --attributes .../Beauty_item2attributes.json]
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench import add_out_argument, emit, machine_state, start

VARIANTS: dict[str, dict[str, Any]] = {
    "sequences-pool50": {"samples": "sequences", "batch_size": 128, "length_pool": 50, "dropout": 0.3},
    "prefixes-random": {"samples": "prefixes", "batch_size": 256, "length_pool": 1},
    "prefixes-sorted": {"samples": "prefixes", "batch_size": 256, "length_pool": 0},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="one-user-per-line sequences (e.g. Beauty.txt)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs timed per variant")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--titles", help="titles table: adds the text-tower variants")
    parser.add_argument("--attributes", help="item attributes JSON: adds the text-tower variants")
    parser.add_argument("--variants", help="comma-separated subset (default: all that apply)")
    add_out_argument(parser, "train_epoch")
    args = parser.parse_args()
    start(args.out)

    import torch

    from edgerec_sdk.train.data import leave_one_out, read_interactions
    from edgerec_sdk.train.metadata import item_metadata
    from edgerec_sdk.train.model import SASRec
    from edgerec_sdk.train.samples import length_batches, padding_share, training_samples
    from edgerec_sdk.train.text import encode_items, train_tokenizer
    from edgerec_sdk.train.train import TrainConfig, fit, tune_allocator

    tune_allocator()
    data = read_interactions(args.data)
    split = leave_one_out(data.sequences)
    variants = dict(VARIANTS)
    tokens, vocab = None, 0
    if args.titles or args.attributes:
        meta = item_metadata(data, titles_path=args.titles, attributes_path=args.attributes)
        tok = train_tokenizer(meta.titles, meta.attributes)
        tokens, vocab = torch.from_numpy(encode_items(tok, meta.titles, meta.attributes)), tok.get_vocab_size()
        variants |= {"text-sparse": VARIANTS["prefixes-sorted"], "text-gather": VARIANTS["prefixes-sorted"]}
    sparse_table = SASRec._text_table
    for name in args.variants.split(",") if args.variants else variants:
        cfg = TrainConfig(threads=args.threads, **variants[name])
        text = name.startswith("text-")
        if text and tokens is None:
            parser.error(f"{name} needs --titles or --attributes")
        # the peer: every item's text part gathered as [n_items, T, dim] token embeddings and averaged
        SASRec._text_table = (lambda m: m.text_vector(m.item_tokens)) if name == "text-gather" \
            else sparse_table  # type: ignore[method-assign]
        _, targets, lengths = training_samples(split.train, cfg.max_len, mode=cfg.samples)
        batches = length_batches(lengths, cfg.batch_size, np.random.default_rng(cfg.seed),
                                 pool=cfg.length_pool or None)
        computed = sum(int(lengths[b].max()) * len(b) for b in batches)
        _, hist, _, _ = fit(split.train, data.n_items, cfg, epochs=args.epochs, progress=False, desc=name,
                            item_tokens=tokens if text else None, vocab_size=vocab if text else 0)
        emit(bench="train_epoch", variant=name, data=os.path.basename(args.data), rows=len(lengths),
             targets=int((targets > 0).sum()), steps=len(batches), encoder_positions=computed,
             padding_share=round(padding_share(lengths, batches), 4),
             epoch_s=round(float(np.median(hist["epoch_s"])), 2), loss=round(hist["loss"][-1], 4),
             threads=args.threads, load1_after=machine_state()["load1"])
    SASRec._text_table = sparse_table  # type: ignore[method-assign]


if __name__ == "__main__":
    main()
