"""Search latency and memory over synthetic stored embeddings: exact search against FAISS indexes
(utils/inference/ann_index.py, what `infer.py search` runs after encoding its queries).

    python benchmarks/bench_search.py --sizes 10000 100000 1000000 --output benchmarks/results/bench_search.json

Embeddings: float16 [N, 512] (ViT-B/32's width) around 1,000 random centres (plus noise), so an index has
structure to find; queries: 100 other points near random centres (not stored, like text queries). Each case
runs in a fresh process: `build` writes the index (time, recall@10 of the 100 queries, file size), `search`
holds the embeddings as the search command does, reads the index (load_ann) and times what top_k runs
(exact_top_k, or the index's search) for 1 query at a time (median of 20) and for 100 at once; memory = peak RSS
of the search process above its RSS once the embeddings are in memory.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from benchmarks.report import finish
from utils.inference.ann_index import ANN_INDEX, build_ann, exact_top_k, load_ann

# (kind, params) per size; None params = the defaults of build-ann. Kept to a few minutes on 2 shared cores: HNSW
# builds at 10^4 points / 15 s with the defaults there, so 10^5 gets a lighter graph and 10^6 none.
PLAN = {10_000: [("flat", None), ("ivf", None), ("hnsw", None)],
        100_000: [("ivf", None), ("hnsw", {"hnsw_m": 16, "ef_construction": 40})],
        1_000_000: [("ivf", {"nlist": 256, "nprobe": 16})]}  # the default nlist 1000 trains for minutes here


def synthetic(count: int, dim: int, seed: int = 0) -> tuple[list[str], np.ndarray, torch.Tensor]:
    """(ids, float16 [count, dim], queries float32 [100, dim]), written in blocks to bound the peak memory."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, dim), dtype=np.float32)
    embeddings = np.empty((count, dim), np.float16)
    for start in range(0, count, 10_000):  # small blocks: their temporaries stay below what search needs
        stop = min(count, start + 10_000)
        embeddings[start:stop] = centres[rng.integers(0, 1000, stop - start)] + 0.7 * rng.standard_normal(
            (stop - start, dim), dtype=np.float32)
    queries = centres[rng.integers(0, 1000, 100)] + 0.9 * rng.standard_normal((100, dim), dtype=np.float32)
    return [f"v{i}" for i in range(count)], embeddings, torch.from_numpy(queries)


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def run_case(phase: str, count: int, dim: int, kind: str, params: dict | None, folder: str) -> dict:
    ids, embeddings, queries = synthetic(count, dim)
    if phase == "build":
        record = build_ann(folder, ids, embeddings, kind, params, recall_queries=queries.numpy())
        return {**record, "index_mib": round(os.path.getsize(os.path.join(folder, ANN_INDEX)) / 2**20, 1)}
    base = rss_kib()
    start = time.perf_counter()
    ann = None if kind == "exact" else load_ann(folder, ids)

    def search(q: torch.Tensor):
        return exact_top_k(q, embeddings, 10) if ann is None else ann.search(q, 10)
    load = time.perf_counter() - start
    search(queries[:1])  # warm-up
    single = []
    for query in queries[:20]:
        start = time.perf_counter()
        search(query[None])
        single.append(time.perf_counter() - start)
    start = time.perf_counter()
    search(queries)
    batch = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"ms_per_query": round(1000 * float(np.median(single)), 2), "ms_per_100_queries": round(1000 * batch, 1),
            "load_s": round(load, 2), "extra_mib": round((peak - base) / 1024),
            "store_mib": round(embeddings.nbytes / 2**20)}


def child(phase: str, count: int, dim: int, kind: str, params: dict | None, folder: str, threads: int) -> dict:
    command = [sys.executable, __file__, "--case", json.dumps([phase, count, dim, kind, params, folder]),
               "--threads", str(threads)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(PLAN))
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2, help="torch and FAISS threads")
    parser.add_argument("--kinds", nargs="+", default=["exact", "flat", "ivf", "hnsw"],
                        help="which searches of the plan to run")
    parser.add_argument("--output", default=None, help="JSON file for the results")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)  # one case, in a child process
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.case:
        import faiss
        faiss.omp_set_num_threads(args.threads)
        print(json.dumps(run_case(*json.loads(args.case))))
        return 0
    rows = []
    for count in args.sizes:
        if "exact" in args.kinds:
            with tempfile.TemporaryDirectory() as folder:
                rows.append({"count": count, "kind": "exact",
                             **child("search", count, args.dim, "exact", None, folder, args.threads)})
                print(json.dumps(rows[-1]), flush=True)
        for kind, params in [(k, p) for k, p in PLAN.get(count, []) if k in args.kinds]:
            with tempfile.TemporaryDirectory() as folder:
                built = child("build", count, args.dim, kind, params, folder, args.threads)
                rows.append({"count": count, "kind": kind, "params": built["params"],
                             "recall_at_10": built["recall_at_10"], "build_s": built["build_seconds"],
                             "index_mib": built["index_mib"],
                             **child("search", count, args.dim, kind, params, folder, args.threads)})
                print(json.dumps(rows[-1]), flush=True)
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared with other "
                         f"jobs), torch {torch.__version__}, {args.threads} threads", "dim": args.dim, "rows": rows}
    return finish(result, ["| N | search | params | recall@10 | build s | load s | ms / query | ms / 100 queries "
                           "| extra MiB | index MiB |", "|---|---|---|---|---|---|---|---|---|---|"] + [
        f"| {r['count']:,} | {r['kind']} | {r.get('params', '')} | {r.get('recall_at_10', 1.0)} | "
        f"{r.get('build_s', '')} | {r['load_s']} | {r['ms_per_query']} | {r['ms_per_100_queries']} | "
        f"{r['extra_mib']} | {r.get('index_mib', '')} |" for r in rows], args.output)

if __name__ == "__main__":
    raise SystemExit(main())
