"""Sharded encoding for evaluation, shared by the retrieval and recognition evaluators: each rank encodes a
contiguous shard of a dataset view (``shard_bounds``: no padding, so no item is encoded or counted twice), the
results are gathered in dataset order on every rank, and every feature is checked finite (``EvaluationError``
otherwise: a diverged model, or an overflow under float16)."""
from __future__ import annotations

from typing import Dict

import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from utils.engine.runtime.distributed import DistContext, all_gather_object, gather_uneven, shard_bounds
from utils.engine.runtime.precision import Precision


class EvaluationError(RuntimeError):
    """The evaluation cannot give trustworthy metrics (non-finite features); the message says what and why."""


def check_finite(feats: torch.Tensor, ids: list, what: str, split: str) -> None:
    """EvaluationError naming how many of ``feats`` [N, E] (rows named by ``ids``) have a NaN or inf entry."""
    bad = ~torch.isfinite(feats).all(dim=1)
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten().tolist()
        raise EvaluationError(
            f"{split}: {len(rows)} of {len(feats)} {what} features are not finite (NaN or inf; e.g. "
            f"{[ids[i] for i in rows[:3]]}): the model's weights have diverged (see the training log) or "
            f"--precision overflows (try --precision fp32); no metrics are computed from them")


@torch.no_grad()
def encode_shard(view, encode, keys, index_key: str, ctx: DistContext, batch_size: int, num_workers: int,
                  precision: Precision, desc: str) -> Dict[str, torch.Tensor]:
    """Encode this rank's contiguous shard of ``view`` (a sequence of item dicts) with ``encode(batch) -> [b, ...]``
    under ``precision``; returns, gathered in dataset order on every rank, {"feats": [N, ...] float32,
    ``index_key``: [N], and each of ``keys``: [N] int64}."""
    shard = Subset(view, list(shard_bounds(len(view), ctx.rank, ctx.world_size)))
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=ctx.device.type == "cuda")
    feats, extras = [], {k: [] for k in (index_key,) + tuple(keys)}
    for batch in tqdm(loader, desc=desc, disable=not ctx.is_main, leave=False, dynamic_ncols=True):
        with precision.autocast():
            feats.append(encode(batch).float())
        for k in extras:
            extras[k].append(torch.as_tensor(batch[k]).long().to(ctx.device))
    local = torch.cat(feats) if feats else None
    # A rank whose shard is empty still has to send a [0, E] tensor: learn E from the others.
    shapes = [s for s in all_gather_object(None if local is None else tuple(local.shape[1:])) if s is not None]
    if not shapes:
        raise ValueError(f"{desc}: the evaluation split is empty")
    if local is None:
        local = torch.zeros((0,) + shapes[0], device=ctx.device)
    out = {"feats": gather_uneven(local)}
    for k, parts in extras.items():
        local_k = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long, device=ctx.device)
        out[k] = gather_uneven(local_k)
    return out


def check_order(index: torch.Tensor, n: int, what: str) -> None:
    """RuntimeError unless the gathered ``index`` [n] is 0..n-1: the items came back in dataset order."""
    if not torch.equal(index.cpu(), torch.arange(n)):
        raise RuntimeError(f"{what}: gathered items are not in dataset order (got {index[:10].tolist()}...)")
