"""A FAISS nearest-neighbour index of a store's videos (`infer.py build-ann`), and the top-k search of
`infer.py search`: exact (every stored video scored) or through the index.

Files beside the store (written atomically, the .json last: it commits the index):
  ann.faiss   the serialised FAISS index of the unit-normalised stored embeddings (inner product = cosine)
  ann.json    kind, parameters, count, dim and ids_sha256 of the store it indexes, faiss_sha256 (of ann.faiss),
              recall@10 against exact search, build seconds

Loading checks ann.json (each field there, of its type) and ann.faiss against it (its SHA-256, then the kind,
count and dimension of the index read): an index file replaced, truncated or corrupt, or a record that is not
build-ann's, is refused with the command that rebuilds them. A record without faiss_sha256 (written before it
was recorded) cannot be checked and is refused the same way.

FAISS is optional (`pip install faiss-cpu`, requirements-ann.txt): without it a store still searches exactly.
An index built for other ids than the store now holds (videos added since) is not used by `auto` search.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models import cosine_similarity
from models.file_digest import sha256_of
from utils.atomic_file import write_atomic

log = logging.getLogger(__name__)
ANN_INDEX, ANN_RECORD = "ann.faiss", "ann.json"
KINDS = ("flat", "ivf", "hnsw")  # exact inner product; inverted lists (k-means cells); HNSW graph
SEARCH_MODES = ("auto", "exact", "ann")
# `auto` search scores every video below this many (benchmarks/bench_search.py, docs/BENCHMARKS.md: exact search of
# 10^4 stored embeddings of 512 takes 26 ms on 2 shared CPU cores, of 10^5 0.34 s, about what loading a ViT-B/32
# takes; from there an index saves seconds per command, at a recall of about 0.9 or more).
EXACT_BELOW = 100_000
RECALL_K = 10
QUERY_BLOCK = 256  # queries scored at once by exact search (bounds the [queries, videos] score matrix)


class AnnError(ValueError):
    """No usable ANN index: FAISS is not installed, the store has none, or it indexes other videos."""


def import_faiss():
    """The faiss module; AnnError saying how to install it when it is missing."""
    try:
        import faiss
    except ImportError:
        raise AnnError("FAISS is not installed: pip install faiss-cpu (or -r requirements-ann.txt); without it "
                       "search scores every stored video (--search exact)") from None
    return faiss


# ann.json's fields that loading reads, and their types
RECORD_FIELDS = {"kind": str, "params": dict, "count": int, "dim": int, "ids_sha256": str, "faiss_sha256": str}
FAISS_CLASSES = {"flat": "IndexFlatIP", "ivf": "IndexIVFFlat", "hnsw": "IndexHNSWFlat"}  # what read_index returns


def ids_digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def rebuild_hint(root: Path) -> str:
    return f"rebuild it with `python infer.py build-ann --store {root} --rebuild`"


def unit_rows(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """float32 [N, E] rows of norm 1 (the cosine of two is their dot product)."""
    x = torch.as_tensor(x).float()
    return torch.nn.functional.normalize(x, dim=-1).numpy()


def exact_top_k(queries: torch.Tensor, embeddings: np.ndarray, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, rows) [Q, min(k, N)] of the cosine of raw `queries` [Q, E] with every stored row [N, E]."""
    videos = torch.from_numpy(embeddings)
    blocks = [cosine_similarity(block, videos).topk(min(k, len(embeddings)), dim=1)
              for block in queries.split(QUERY_BLOCK)]
    return torch.cat([b.values for b in blocks]), torch.cat([b.indices for b in blocks])


def _new_index(faiss, kind: str, dim: int, params: dict[str, int]):
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "ivf":
        return faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, params["nlist"], faiss.METRIC_INNER_PRODUCT)
    index = faiss.IndexHNSWFlat(dim, params["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = params["ef_construction"]
    return index


def _set_search_params(index, kind: str, params: dict[str, int]) -> None:
    if kind == "ivf":
        index.nprobe = params["nprobe"]
    elif kind == "hnsw":
        index.hnsw.efSearch = params["ef_search"]


def default_params(kind: str, count: int) -> dict[str, int]:
    """nlist ~ sqrt(N) cells (at least 39 training vectors each, FAISS's minimum; FAISS suggests up to 16 sqrt(N),
    which k-means takes minutes to train on a CPU at 10^6), nprobe nlist / 16; HNSW M 32, efConstruction 80,
    efSearch 64."""
    if kind == "ivf":
        nlist = max(1, min(round(math.sqrt(count)), count // 39))
        return {"nlist": nlist, "nprobe": max(1, nlist // 16)}
    if kind == "hnsw":
        return {"hnsw_m": 32, "ef_construction": 80, "ef_search": 64}
    return {}


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |found row set & exact row set| / k, rows [Q, k] (-1 = nothing found)."""
    return float(np.mean([len(set(f[f >= 0]) & set(e)) / exact.shape[1] for f, e in zip(found, exact)]))


class AnnIndex:
    """A loaded index: `search(queries [Q, E] raw, k)` -> (scores, rows) [Q, k], rows -1 past what it found."""

    def __init__(self, index, record: dict[str, Any]):
        self.index, self.record = index, record

    def search(self, queries: torch.Tensor | np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(unit_rows(queries), min(k, self.index.ntotal))


def build_ann(root: str | Path, ids: list[str], embeddings: np.ndarray, kind: str = "hnsw",
              params: dict[str, int] | None = None, recall_queries: np.ndarray | None = None,
              num_recall_queries: int = 500, seed: int = 0) -> dict[str, Any]:
    """Build the `kind` index of the store at `root` (its `ids`, `embeddings` [N, E]), measure its recall@10
    against exact search on `recall_queries` [Q, E] (default: `num_recall_queries` stored embeddings drawn at
    random) and write ann.faiss, then ann.json (returned). `params` override default_params."""
    if kind not in KINDS:
        raise AnnError(f"--kind {kind!r}: choose one of {', '.join(KINDS)}")
    faiss = import_faiss()
    start = time.time()
    vectors = unit_rows(embeddings)
    params = {**default_params(kind, len(ids)), **(params or {})}
    if kind == "ivf" and params["nlist"] > len(ids):
        raise AnnError(f"--nlist {params['nlist']} is more than the {len(ids)} videos of the store (each k-means cell "
                       f"needs one, FAISS suggests 39): choose --nlist {len(ids)} or fewer")
    index = _new_index(faiss, kind, vectors.shape[1], params)
    if kind == "ivf":
        index.train(vectors)
    index.add(vectors)
    _set_search_params(index, kind, params)
    build_seconds = time.time() - start

    if recall_queries is None:
        rows = np.random.default_rng(seed).choice(len(ids), min(num_recall_queries, len(ids)), replace=False)
        recall_queries, query_source = embeddings[np.sort(rows)], "stored videos"
    else:
        query_source = "given"
    if recall_queries.ndim != 2 or recall_queries.shape[1] != vectors.shape[1]:
        raise AnnError(f"--recall_queries: expected an array [Q, {vectors.shape[1]}], got {recall_queries.shape}")
    queries = torch.from_numpy(np.asarray(recall_queries, dtype=np.float32))
    exact = exact_top_k(queries, embeddings, RECALL_K)[1].numpy()
    found = AnnIndex(index, {}).search(queries, RECALL_K)[1]
    root = Path(root)
    digest = hashlib.sha256()

    def write_index(file) -> None:
        def write(chunk: bytes) -> int:
            digest.update(chunk)
            return file.write(chunk)
        faiss.write_index(index, faiss.PyCallbackIOWriter(write))

    write_atomic(root / ANN_INDEX, write_index)
    record = {"kind": kind, "params": params, "count": len(ids), "dim": int(vectors.shape[1]),
              "ids_sha256": ids_digest(ids), "faiss_sha256": digest.hexdigest(),
              f"recall_at_{RECALL_K}": round(recall_at_k(found, exact), 6),
              "recall_queries": f"{len(queries)} {query_source}", "build_seconds": round(build_seconds, 3),
              "faiss_version": faiss.__version__, "built": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_atomic(root / ANN_RECORD, lambda f: f.write(json.dumps(record, indent=1).encode()))
    return record


def read_record(root: Path) -> dict[str, Any]:
    """ann.json of the store at `root`, each of RECORD_FIELDS there with its type; AnnError naming the file."""
    path = root / ANN_RECORD
    try:
        record = json.loads(path.read_text())
    except ValueError as error:  # not JSON, not UTF-8
        raise AnnError(f"{path} is not JSON ({error}): {rebuild_hint(root)}") from None
    wrong = [name for name, kind in RECORD_FIELDS.items()
             if not isinstance(record, dict) or not isinstance(record.get(name), kind)]
    if wrong:
        raise AnnError(f"{path} is not an ANN record of this version of build-ann (no valid {', '.join(wrong)}): "
                       + rebuild_hint(root))
    if record["kind"] not in KINDS:
        raise AnnError(f"{path}: unknown kind {record['kind']!r}: {rebuild_hint(root)}")
    return record


def load_ann(root: str | Path, ids: list[str]) -> AnnIndex:
    """The index beside the store at `root`, checked to be the one its ann.json describes (module docstring)
    and to index exactly `ids`; AnnError when FAISS is missing, there is none, it indexes other videos, or
    either file fails a check."""
    root = Path(root)
    if not (root / ANN_RECORD).is_file():
        raise AnnError(f"{root} has no ANN index: build one with `python infer.py build-ann --store {root}`")
    faiss = import_faiss()
    record = read_record(root)
    if record["count"] != len(ids) or record["ids_sha256"] != ids_digest(ids):
        raise AnnError(f"the ANN index of {root} indexes {record['count']} videos, not the {len(ids)} the store "
                       f"holds now: {rebuild_hint(root)}")
    path = root / ANN_INDEX
    if not path.is_file():
        raise AnnError(f"{path} is missing (its record {root / ANN_RECORD} is there): {rebuild_hint(root)}")
    if sha256_of(path) != record["faiss_sha256"]:
        raise AnnError(f"{path} is not the index {root / ANN_RECORD} records (its SHA-256 differs: replaced, cut or "
                       f"damaged since it was built): {rebuild_hint(root)}")
    try:
        index = faiss.read_index(str(path))  # straight from the file: no second copy in memory
    except RuntimeError:  # a file this FAISS version cannot read
        raise AnnError(f"{path}: FAISS {faiss.__version__} cannot read it: {rebuild_hint(root)}") from None
    found = (type(index).__name__, index.ntotal, index.d)
    if found != (FAISS_CLASSES[record["kind"]], record["count"], record["dim"]):
        raise AnnError(f"{path} is a {found[0]} of {found[1]} vectors of {found[2]}, not the {record['kind']} index "
                       f"of {record['count']} x {record['dim']} that {root / ANN_RECORD} records: {rebuild_hint(root)}")
    _set_search_params(index, record["kind"], record["params"])
    return AnnIndex(index, record)


def ranked_hits(ids: list[str], scores: list[float], rows: list[int]) -> list[dict[str, Any]]:
    """[{"rank", "id", "score"}] of one query's scores and rows (as top_k returns them), the scores rounded to 6
    decimals: what `infer.py search --json` prints and `infer.py serve` answers."""
    return [{"rank": rank + 1, "id": ids[row], "score": round(score, 6)}
            for rank, (score, row) in enumerate(zip(scores, rows))]


def top_k(root: str | Path, ids: list[str], embeddings: np.ndarray, queries: torch.Tensor, k: int,
          mode: str = "auto") -> tuple[list[list[float]], list[list[int]]]:
    """Per query of `queries` [Q, E] (raw text features) the scores and rows of its top min(k, N) stored videos.
    `mode` "exact" scores every video; "ann" uses the store's index (AnnError if unusable); "auto" uses it when
    the store holds EXACT_BELOW videos or more and the index is usable, else searches exactly (logging why)."""
    if mode not in SEARCH_MODES:
        raise AnnError(f"--search {mode!r}: choose one of {', '.join(SEARCH_MODES)}")
    ann = None
    if mode == "ann" or (mode == "auto" and len(ids) >= EXACT_BELOW and (Path(root) / ANN_RECORD).is_file()):
        try:
            ann = load_ann(root, ids)
        except AnnError as error:
            if mode == "ann":
                raise
            log.warning(f"exact search: {error}")
    if ann is None:
        scores, rows = exact_top_k(queries, embeddings, k)
        return scores.tolist(), rows.tolist()
    scores, rows = ann.search(queries, k)
    kept = [[(s, r) for s, r in zip(q_scores, q_rows) if r >= 0] for q_scores, q_rows in zip(scores, rows)]
    return [[float(s) for s, _ in q] for q in kept], [[int(r) for _, r in q] for q in kept]
