"""FAISS indexes of a store (utils/inference/ann_index.py, infer.py build-ann / search --search): an exact index
returns brute force's top-k, the recall written for approximate ones is the recall of what they return, a
stale index is refused, an index file or record that does not match what was built is refused naming the file,
and without FAISS a store still searches exactly."""
from __future__ import annotations

import hashlib
import json
import re
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import infer
from utils.inference import ann_index
from utils.inference.ann_index import ANN_INDEX, ANN_RECORD, AnnError, build_ann, load_ann, recall_at_k, top_k
from utils.inference.embedding_store import EmbeddingStore

N, DIM = 3000, 32


@pytest.fixture(scope="module")
def synthetic():
    """(ids, float16 embeddings [N, DIM] around 30 cluster centres, raw queries [50, DIM])."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((30, DIM))
    embeddings = (centres[rng.integers(0, 30, N)] + 0.5 * rng.standard_normal((N, DIM))).astype(np.float16)
    queries = torch.from_numpy(centres[rng.integers(0, 30, 50)] + 0.8 * rng.standard_normal((50, DIM))).float()
    return [f"v{i}" for i in range(N)], embeddings, queries


def brute_force(embeddings: np.ndarray, queries: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = F.normalize(queries, dim=1) @ F.normalize(torch.from_numpy(embeddings).float(), dim=1).t()
    top = scores.topk(k, dim=1)
    return top.values.numpy(), top.indices.numpy()


def test_an_exact_index_returns_the_brute_force_top_k(synthetic, tmp_path):
    ids, embeddings, queries = synthetic
    record = build_ann(tmp_path, ids, embeddings, "flat")
    assert record["recall_at_10"] == 1.0 and record["count"] == N
    scores, rows = top_k(tmp_path, ids, embeddings, queries, 10, "ann")
    expected_scores, expected_rows = brute_force(embeddings, queries, 10)
    assert np.array_equal(np.array(rows), expected_rows)
    np.testing.assert_allclose(np.array(scores), expected_scores, atol=1e-5)
    exact_scores, exact_rows = top_k(tmp_path, ids, embeddings, queries, 10, "exact")
    assert exact_rows == rows  # and the exact search too
    np.testing.assert_allclose(np.array(exact_scores), expected_scores, atol=1e-5)


@pytest.mark.parametrize("kind, params", [("ivf", {"nlist": 64, "nprobe": 1}), ("ivf", {"nlist": 64, "nprobe": 64}),
                                          ("hnsw", {"hnsw_m": 4, "ef_construction": 8, "ef_search": 10})])
def test_the_recall_written_is_the_recall_of_the_approximate_search(synthetic, tmp_path, kind, params):
    ids, embeddings, queries = synthetic
    record = build_ann(tmp_path, ids, embeddings, kind, params, recall_queries=queries.numpy())
    assert json.loads((tmp_path / ANN_RECORD).read_text()) == record
    assert record["params"] == params and record["recall_queries"] == "50 given"
    rows = load_ann(tmp_path, ids).search(queries, 10)[1]
    recall = recall_at_k(rows, brute_force(embeddings, queries, 10)[1])
    assert record["recall_at_10"] == pytest.approx(recall)
    if kind == "ivf" and params["nprobe"] == params["nlist"]:
        assert recall == 1.0  # every cell searched: exhaustive
    else:
        assert 0.2 < recall < 1.0  # approximate, and not nonsense


def test_auto_search_uses_the_index_from_exact_below_videos_and_never_a_stale_one(synthetic, tmp_path, monkeypatch,
                                                                                  caplog):
    ids, embeddings, queries = synthetic
    build_ann(tmp_path, ids, embeddings, "hnsw", {"hnsw_m": 4, "ef_construction": 8, "ef_search": 10})
    exact = top_k(tmp_path, ids, embeddings, queries, 10, "exact")
    approximate = top_k(tmp_path, ids, embeddings, queries, 10, "ann")
    assert approximate[1] != exact[1]  # the index is approximate, so the two searches can be told apart
    assert top_k(tmp_path, ids, embeddings, queries, 10, "auto") == exact  # N < EXACT_BELOW
    monkeypatch.setattr(ann_index, "EXACT_BELOW", N)
    assert top_k(tmp_path, ids, embeddings, queries, 10, "auto") == approximate
    grown = ids[:-1] + ["another"]  # the store changed since the index was built
    assert top_k(tmp_path, grown, embeddings, queries, 10, "auto") == exact
    assert "rebuild it with `python infer.py build-ann" in caplog.text
    with pytest.raises(AnnError, match=f"indexes {N} videos, not the {N} the store holds now"):
        top_k(tmp_path, grown, embeddings, queries, 10, "ann")


def test_without_faiss_a_store_searches_exactly_and_build_ann_says_how_to_install(meanp_store, tmp_path,
                                                                                  monkeypatch):
    clip, _, store = meanp_store
    expected = infer.main(["search", "--store", str(store), "--top_k", "5", "a red circle", "--search", "exact"])
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` raises ImportError
    monkeypatch.setattr(ann_index, "EXACT_BELOW", 1)
    (tmp_path / "s").mkdir()
    for name in ("embeddings.npy", "ids.json", "metadata.json"):
        (tmp_path / "s" / name).write_bytes((store / name).read_bytes())
    (tmp_path / "s" / ANN_RECORD).write_text(json.dumps({"count": 18, "ids_sha256": ann_index.ids_digest(
        EmbeddingStore(store).load()[0])}))  # an index that faiss would be needed to read
    assert infer.main(["search", "--store", str(tmp_path / "s"), "--top_k", "5", "a red circle"]) == expected
    for argv in (["build-ann", "--store", str(tmp_path / "s"), "--rebuild"],
                 ["search", "--store", str(tmp_path / "s"), "--search", "ann", "x"]):
        with pytest.raises(SystemExit) as error:
            infer.main(argv)
        assert str(error.value.code).startswith("error: FAISS is not installed: pip install faiss-cpu")


def test_build_ann_command_and_ann_search_of_a_real_store(meanp_store, tmp_path, capsys):
    _, _, store = meanp_store
    (tmp_path / "s").mkdir()
    for name in ("embeddings.npy", "ids.json", "metadata.json"):
        (tmp_path / "s" / name).write_bytes((store / name).read_bytes())
    record = infer.main(["build-ann", "--store", str(tmp_path / "s"), "--kind", "flat"])
    assert "recall@10 1.0 against exact search (18 stored videos as queries)" in capsys.readouterr().out
    assert record["count"] == 18 and (tmp_path / "s" / "ann.faiss").is_file()
    queries = ["a red circle", "a blue square moves up"]
    exact = infer.main(["search", "--store", str(tmp_path / "s"), "--search", "exact", *queries])
    ann = infer.main(["search", "--store", str(tmp_path / "s"), "--search", "ann", *queries])
    assert [[h["id"] for h in q["results"]] for q in ann] == [[h["id"] for h in q["results"]] for q in exact]
    for q_ann, q_exact in zip(ann, exact):
        np.testing.assert_allclose([h["score"] for h in q_ann["results"]], [h["score"] for h in q_exact["results"]],
                                   atol=1e-5)
    with pytest.raises(SystemExit, match="already has an ANN index .*pass --rebuild"):
        infer.main(["build-ann", "--store", str(tmp_path / "s")])
    assert infer.main(["build-ann", "--store", str(tmp_path / "s"), "--kind", "ivf", "--rebuild"])["kind"] == "ivf"
    with pytest.raises(SystemExit, match="build-ann --nprobe must be >= 1, got 0"):
        infer.main(["build-ann", "--store", str(tmp_path / "s"), "--nprobe", "0"])


def test_an_index_file_replaced_cut_or_damaged_or_a_bad_record_is_refused_naming_the_file(synthetic, tmp_path,
                                                                                           monkeypatch, caplog):
    ids, embeddings, queries = synthetic[0][:300], synthetic[1][:300], synthetic[2]
    store, other = tmp_path / "store", tmp_path / "other"
    store.mkdir()
    other.mkdir()
    build_ann(store, ids, embeddings, "flat")
    build_ann(other, ids, embeddings[::-1].copy(), "flat")  # the same kind, count and dimension; other vectors
    index, record = (store / ANN_INDEX).read_bytes(), (store / ANN_RECORD).read_text()
    assert json.loads(record)["faiss_sha256"] == hashlib.sha256(index).hexdigest()
    damaged = bytearray(index)
    damaged[len(index) // 2] ^= 0xFF
    legacy = {k: v for k, v in json.loads(record).items() if k != "faiss_sha256"}  # written before the checksum
    rebuild = f"rebuild it with `python infer.py build-ann --store {store} --rebuild`"
    for name, content, message in [
        (ANN_INDEX, (other / ANN_INDEX).read_bytes(), "is not the index .* records \\(its SHA-256 differs"),
        (ANN_INDEX, index[: len(index) // 2], "is not the index .* records \\(its SHA-256 differs"),
        (ANN_INDEX, bytes(damaged), "is not the index .* records \\(its SHA-256 differs"),
        (ANN_RECORD, b"{}", "is not an ANN record of this version of build-ann \\(no valid kind, params, count"),
        (ANN_RECORD, b"not json", "is not JSON \\(Expecting value"),
        (ANN_RECORD, b"\xff\xfe", "is not JSON"),
        (ANN_RECORD, json.dumps(legacy).encode(), "is not an ANN record .*\\(no valid faiss_sha256\\)"),
        (ANN_RECORD, json.dumps({**json.loads(record), "dim": 16}).encode(),
         "is a IndexFlatIP of 300 vectors of 32, not the flat index of 300 x 16 that"),
    ]:
        (store / name).write_bytes(content)
        named = store / (ANN_INDEX if message.startswith("is a Index") else name)
        with pytest.raises(AnnError, match=f"^{re.escape(str(named))} {message}.*: {re.escape(rebuild)}$"):
            load_ann(store, ids)
        monkeypatch.setattr(ann_index, "EXACT_BELOW", 1)  # auto search falls back to exact search, saying why
        assert top_k(store, ids, embeddings, queries, 5, "auto") == top_k(store, ids, embeddings, queries, 5, "exact")
        assert rebuild in caplog.text
        (store / ANN_INDEX).write_bytes(index)
        (store / ANN_RECORD).write_text(record)
    assert load_ann(store, ids).index.ntotal == 300  # the files as built load

    def unreadable(path):  # what a FAISS version that cannot read the file raises
        raise RuntimeError("Error in faiss::read_index: unknown index header")

    monkeypatch.setattr(ann_index.import_faiss(), "read_index", unreadable)
    with pytest.raises(AnnError, match=f"^{re.escape(str(store / ANN_INDEX))}: FAISS .* cannot read it: "
                                       f"{re.escape(rebuild)}$"):
        load_ann(store, ids)


def test_a_bad_ann_record_and_an_nlist_above_the_store_size_are_one_line(meanp_store, tmp_path):
    _, _, store = meanp_store
    (tmp_path / "s").mkdir()
    for name in ("embeddings.npy", "ids.json", "metadata.json"):
        (tmp_path / "s" / name).write_bytes((store / name).read_bytes())
    with pytest.raises(SystemExit) as error:
        infer.main(["build-ann", "--store", str(tmp_path / "s"), "--kind", "ivf", "--nlist", "19"])
    assert error.value.code == "error: --nlist 19 is more than the 18 videos of the store (each k-means cell needs " \
                               "one, FAISS suggests 39): choose --nlist 18 or fewer"
    assert not (tmp_path / "s" / ANN_INDEX).exists() and not (tmp_path / "s" / ANN_RECORD).exists()
    infer.main(["build-ann", "--store", str(tmp_path / "s"), "--kind", "flat"])
    (tmp_path / "s" / ANN_RECORD).write_text("{}")
    with pytest.raises(SystemExit) as error:
        infer.main(["search", "--store", str(tmp_path / "s"), "--search", "ann", "a red circle"])
    assert str(error.value.code).startswith(f"error: {tmp_path / 's' / ANN_RECORD} is not an ANN record")
