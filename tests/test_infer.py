"""infer.py on generated videos with a tiny STOP model: index, search, embed-text, visualize, resumption, bad
videos and the error paths.

The model is a random tiny CLIP with STOP on it, its trained tensors perturbed (so only a checkpoint that is
really loaded reproduces them) and saved as a checkpoint of ours. A random CLIP gives nearly parallel features
for all videos (cosine > 0.999), which would make any ranking check vacuous, so two of the frozen CLIP's
projections are set by hand (the CLIP file is written here too): the visual projection drops the direction
common to the videos' pooled features, which spreads their embeddings apart, and the text projection gets a
rank-one change that maps the query's text feature exactly onto the target video's direction (cosine 1; the
fixture checks every other video scores clearly lower). Rankings of other queries are checked against a
brute-force cosine of encode_text / encode_video computed here.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import infer
from dataloaders.synthetic import write_dataset
from dataloaders.video_files import Failure
from dataloaders.video_input import read_video_tensor
from models import ModelConfig, VideoTextModel, create_model
from models.checkpoints import FORMAT
from models.clip import CLIP, CLIPConfig
from models.tokenizer import tokenize
from utils.atomic_file import write_atomic
from utils.engine.training.checkpoint import save_atomic
from utils.inference.embedding_store import EmbeddingStore
from utils.inference.inference_model import InferenceModel

OPTIONS = dict(max_frames=4, text_prompt_length=4, local_each_frame_prompt_length=2, global_visual_prompt_length=2)
MAX_WORDS = 16
TARGET = "video2.mp4"
GOOD = ["sub/video4.mp4", "sub/video5.mp4", "video0.mp4", "video1.mp4", "video2.mp4", "video3.mp4"]
REPO = Path(__file__).resolve().parents[1]
ENCODE_VIDEOS = InferenceModel.encode_videos


@dataclass
class Setup:
    videos: Path  # 6 generated videos (2 in sub/), a corrupt .mp4, an empty .avi and a .txt
    clip_path: Path
    checkpoint: Path
    other_checkpoint: Path  # the same model flags, other weights
    model: VideoTextModel  # what the checkpoint + CLIP hold, eval mode
    captions: dict[str, str]  # video id -> its first caption
    query: str  # the caption of TARGET, crafted to retrieve it
    query_score: float = 0.0  # its cosine with TARGET (0 with every other video)
    embeddings: dict[str, torch.Tensor] | None = None  # video id -> encode_video of its frames
    truncated_clip: Path | None = None  # the first 5000 bytes of clip_path


def _save_checkpoint(model: VideoTextModel, path: Path, clip_path: Path) -> None:
    save_atomic({"format": FORMAT, "model": model.learned_state_dict(),
                 "args": {**OPTIONS, "max_words": MAX_WORDS, "pretrained_clip_name": str(clip_path),
                          "lr": 1e-3, "datatype": "msrvtt"}}, path)


def _perturb_learned(model: VideoTextModel, generator: torch.Generator) -> None:
    with torch.no_grad():
        for _, parameter in model.named_trainable_parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))


def reference_video(setup: Setup, video_id: str) -> torch.Tensor:
    """encode_video [E] of the video's frames (the model's tensors do not require grad)."""
    video, mask = read_video_tensor(str(setup.videos / video_id), OPTIONS["max_frames"], 32)
    return setup.model.encode_video(video[None], mask[None])[0]


def reference_text(setup: Setup, texts: list[str]) -> torch.Tensor:
    return setup.model.encode_text(tokenize(texts, MAX_WORDS))


def pre_projection(projection: torch.Tensor, encode) -> torch.Tensor:
    """x [W] of a single feature `encode()` = x @ projection [W, E], read off the gradient d feature[0] / d P[:, 0]."""
    projection.requires_grad_(True)
    with torch.enable_grad():
        x = torch.autograd.grad(encode()[0], projection)[0][:, 0]
    projection.requires_grad_(False)
    return x


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Setup:
    root = tmp_path_factory.mktemp("infer")
    specs = write_dataset(str(root / "data"), 0, 6, seed=0, image_size=32, num_frames=8, progress=False)
    videos = root / "data" / "videos"
    (videos / "sub").mkdir()
    for name in ("video4.mp4", "video5.mp4"):
        (videos / name).rename(videos / "sub" / name)
    (videos / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(3000))
    (videos / "empty.avi").touch()
    (videos / "notes.txt").write_text("not a video")
    (root / "data" / "names.csv").write_text("name\nvideo0.mp4\n")
    captions = {("sub/" if s.video_id in ("video4", "video5") else "") + f"{s.video_id}.mp4": s.captions()[0]
                for s in specs}

    torch.manual_seed(0)
    clip = CLIP(CLIPConfig.tiny())
    model = create_model(ModelConfig(**OPTIONS), clip).eval()
    generator = torch.Generator().manual_seed(1)
    _perturb_learned(model, generator)
    model.requires_grad_(False)
    setup = Setup(videos, root / "clip.pt", root / "run" / "ckpt_best.pt", root / "other.pt", model, captions,
                  captions[TARGET])

    # Visual projection P_v -> (I - (1 - e) u u^T) P_v / r: shrink the direction u common to the pooled features x
    # (feature = x @ P_v) to the size r of what differs between videos (e = r / mean x.u).
    visual_projection = clip.visual.proj
    pooled = torch.stack([pre_projection(visual_projection, lambda v=v: reference_video(setup, v)) for v in GOOD])
    common = F.normalize(pooled.mean(dim=0), dim=0)
    with torch.no_grad():
        along = pooled @ common
        spread = (pooled - along[:, None] * common).norm(dim=1).mean()
        shrink = 1 - spread / along.mean()
        visual_projection.copy_((visual_projection - shrink * torch.outer(common, common @ visual_projection))
                                / spread)
    embeddings = F.normalize(torch.stack([reference_video(setup, v) for v in GOOD]), dim=-1)
    cosine = embeddings @ embeddings.t()
    pairs = torch.block_diag(*[torch.ones(2, 2)] * 3)  # test videos 2k, 2k+1: one video and its reverse
    assert cosine[pairs == 0].max() < 0.9, "the embeddings of different videos must be spread apart"
    # Text projection P_t += h (d - h P_t) / |h|^2: the query's feature h @ P_t becomes d, the part of the
    # target's embedding orthogonal to every other video's (so they all score 0 and the target |d| > 0).
    others = embeddings[[i for i, v in enumerate(GOOD) if v != TARGET]]
    basis = torch.linalg.qr(others.t()).Q  # [E, 5]
    target = embeddings[GOOD.index(TARGET)]
    direction = target - basis @ (basis.t() @ target)
    text_projection = clip.text_projection
    h = pre_projection(text_projection, lambda: reference_text(setup, [setup.query])[0])
    with torch.no_grad():
        text_projection += torch.outer(h, direction - h @ text_projection) / h.dot(h)
    query_cosine = F.cosine_similarity(reference_text(setup, [setup.query]), embeddings)
    setup.query_score = direction.norm().item()
    setup.embeddings = {v: reference_video(setup, v) for v in GOOD}
    assert query_cosine[GOOD.index(TARGET)] == pytest.approx(setup.query_score, abs=1e-4)
    assert setup.query_score > 0.05 and query_cosine.abs().sort().values[-2] < 1e-4

    torch.save(clip.state_dict(), setup.clip_path)
    setup.truncated_clip = root / "truncated_clip.pt"
    setup.truncated_clip.write_bytes(setup.clip_path.read_bytes()[:5000])
    _save_checkpoint(model, setup.checkpoint, setup.clip_path)
    other = create_model(ModelConfig(**OPTIONS), clip)
    _perturb_learned(other, generator)
    _save_checkpoint(other, setup.other_checkpoint, setup.clip_path)
    return setup


def index_argv(setup: Setup, output: Path, *extra: str) -> list[str]:
    return ["index", "--checkpoint", str(setup.checkpoint.parent), "--videos", str(setup.videos), "--output",
            str(output), "--num_workers", "0", *extra]


@pytest.fixture(scope="module")
def indexed(setup, tmp_path_factory) -> tuple[Path, dict]:
    store = tmp_path_factory.mktemp("store") / "index"
    summary = infer.main(index_argv(setup, store, "--batch_size", "4", "--num_workers", "1"))
    return store, summary


def count_encoded(monkeypatch, fail_on_call: int | None = None) -> list[int]:
    """Wrap InferenceModel.encode_videos: record the batch sizes; raise KeyboardInterrupt on call `fail_on_call`."""
    calls: list[int] = []

    def wrapper(self, video, video_mask, return_details=False):
        if fail_on_call is not None and len(calls) + 1 == fail_on_call:
            raise KeyboardInterrupt
        calls.append(len(video))
        return ENCODE_VIDEOS(self, video, video_mask, return_details)

    monkeypatch.setattr(InferenceModel, "encode_videos", wrapper)
    return calls


def read_failed(store: Path) -> dict[str, str]:
    table = pd.read_csv(store / "failed.csv")
    return dict(zip(table["id"], table["kind"]))


def test_index_lists_bad_videos_and_stores_every_good_one(indexed):
    store, summary = indexed
    assert summary == {**summary, "total": 8, "skipped": 0, "encoded": 6, "failed": 2}
    assert json.loads((store / "ids.json").read_text()) == GOOD
    assert read_failed(store) == {"broken.mp4": "unreadable", "empty.avi": "empty"}
    embeddings = np.load(store / "embeddings.npy")
    assert embeddings.dtype == np.float16 and embeddings.shape == (6, 32) and np.isfinite(embeddings).all()
    metadata = json.loads((store / "metadata.json").read_text())
    assert (metadata["count"], metadata["failed"], metadata["model"]["embed_dim"]) == (6, 2, 32)
    assert metadata["model"]["config"]["max_frames"] == 4 and metadata["model"]["max_words"] == MAX_WORDS
    assert not (store / "parts").exists()


def test_stored_embeddings_equal_encode_video_on_the_same_frames(setup, indexed):
    store, _ = indexed
    ids, embeddings = EmbeddingStore(store).load()
    for video_id, stored in zip(ids, embeddings):
        torch.testing.assert_close(torch.from_numpy(stored).float(), setup.embeddings[video_id], atol=1e-3,
                                   rtol=1e-3, msg=video_id)


def test_search_retrieves_the_captioned_video_and_ranks_by_cosine(setup, indexed, tmp_path, capsys):
    store, _ = indexed
    queries = [setup.query] + [setup.captions[v] for v in GOOD if v != TARGET]
    (tmp_path / "queries.txt").write_text("\n".join(queries[1:]) + "\n\n")
    capsys.readouterr()
    results = infer.main(["search", "--store", str(store), setup.query, "--queries", str(tmp_path / "queries.txt"),
                          "--top_k", "10", "--json"])
    assert json.loads(capsys.readouterr().out) == results
    assert [r["query"] for r in results] == queries
    top, second = results[0]["results"][:2]
    assert top["id"] == TARGET and top["score"] == pytest.approx(setup.query_score, abs=2e-3)
    assert abs(second["score"]) < 2e-3

    brute_force = F.normalize(reference_text(setup, queries), dim=-1) @ F.normalize(
        torch.stack([setup.embeddings[v] for v in GOOD]), dim=-1).t()
    for result, expected in zip(results, brute_force):
        hits = result["results"]
        assert sorted(h["id"] for h in hits) == sorted(GOOD)
        scores = [h["score"] for h in hits]
        assert scores == sorted(scores, reverse=True)
        for hit in hits:
            assert hit["score"] == pytest.approx(float(expected[GOOD.index(hit["id"])]), abs=2e-3), hit
        assert float(expected.max()) == pytest.approx(scores[0], abs=2e-3)

    infer.main(["search", "--store", str(store), setup.query, "--top_k", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == setup.query and len(lines) == 3
    assert lines[1].split()[0] == "1" and lines[1].split()[2] == TARGET


def test_rerun_encodes_nothing_and_retries_only_the_failed(setup, indexed, monkeypatch):
    store, _ = indexed
    before = (store / "embeddings.npy").read_bytes()
    calls = count_encoded(monkeypatch)
    summary = infer.main(index_argv(setup, store))
    assert calls == []
    assert (summary["skipped"], summary["encoded"], summary["failed"]) == (6, 0, 2)
    assert (store / "embeddings.npy").read_bytes() == before
    assert read_failed(store) == {"broken.mp4": "unreadable", "empty.avi": "empty"}


def test_interrupted_index_keeps_committed_parts_and_resumes(setup, indexed, tmp_path, monkeypatch):
    store = tmp_path / "store"
    # Batches of 2 in file order: [broken, empty] (no encoding), [sub/video4, sub/video5], [video0, video1] ...
    calls = count_encoded(monkeypatch, fail_on_call=2)
    with pytest.raises(KeyboardInterrupt):
        infer.main(index_argv(setup, store, "--batch_size", "2", "--chunk_size", "2"))
    assert calls == [2]
    ids, _ = EmbeddingStore(store).load()
    assert ids == ["sub/video4.mp4", "sub/video5.mp4"]
    assert set(EmbeddingStore(store).failures()) == {"broken.mp4", "empty.avi"}

    calls = count_encoded(monkeypatch)
    summary = infer.main(index_argv(setup, store, "--batch_size", "3"))
    assert sum(calls) == 4 and (summary["skipped"], summary["encoded"], summary["failed"]) == (2, 4, 2)
    ids, embeddings = EmbeddingStore(store).load()
    full_ids, full = EmbeddingStore(indexed[0]).load()
    assert sorted(ids) == full_ids
    order = [ids.index(v) for v in full_ids]
    np.testing.assert_allclose(embeddings[order].astype(np.float32), full.astype(np.float32), atol=1e-3, rtol=1e-3)
    assert read_failed(store) == {"broken.mp4": "unreadable", "empty.avi": "empty"}


def test_store_readers_see_the_last_commit_and_recover_finishes_or_drops_writes(tmp_path):
    rng = np.random.default_rng(0)
    first, second = rng.standard_normal((2, 3)), rng.standard_normal((1, 3))
    merged = np.concatenate([first, second]).astype(np.float16)
    root = tmp_path / "s"
    store = EmbeddingStore(root)
    store.append(["a", "b"], first, [Failure("x", "empty", "empty file (0 bytes)")])
    store.append(["c"], second, [])
    store.recover = lambda: None  # crash right after the commit point of the merge
    store.consolidate()
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))
    assert "ids.json.new" in files and "parts/part-00001.npy" in files
    ids, embeddings = EmbeddingStore(root).load()  # a reader: the merged result, nothing changed on disk
    assert ids == ["a", "b", "c"] and np.array_equal(embeddings, merged)
    assert list(EmbeddingStore(root).failures()) == ["x"]
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == files

    writer = EmbeddingStore(root)
    writer.recover()
    assert sorted(p.name for p in root.iterdir()) == ["embeddings.npy", "failed.csv", "ids.json"]
    ids, embeddings = writer.load()
    assert ids == ["a", "b", "c"] and np.array_equal(embeddings, merged)

    # A part torn before its .json and a merge torn before its commit: readers ignore them, recover drops them.
    writer.append(["d"], second, [])
    (root / "parts" / "part-00001.npy").write_bytes(b"torn")
    (root / "embeddings.npy.new").write_bytes(b"torn")
    assert EmbeddingStore(root).load()[0] == ["a", "b", "c", "d"]
    writer.recover()
    assert not (root / "embeddings.npy.new").exists()
    assert sorted(p.name for p in (root / "parts").iterdir()) == ["part-00000.json", "part-00000.npy"]
    assert writer.consolidate() == (4, 1)
    assert EmbeddingStore(root).load()[0] == ["a", "b", "c", "d"] and not (root / "parts").exists()


def test_write_atomic_keeps_the_old_content_when_writing_fails(tmp_path):
    target = tmp_path / "ids.json"
    write_atomic(target, lambda f: f.write(b"old"))

    def fail(file):
        file.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, fail)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["ids.json"]


def test_index_from_csv_finds_videos_by_name_and_lists_missing_ones(setup, indexed, tmp_path):
    pd.DataFrame({"video_id": ["video0", "sub/video4.mp4", "nowhere"], "caption": ["x", "y", "z"]}).to_csv(
        tmp_path / "list.csv", index=False)
    store = tmp_path / "store"
    summary = infer.main(["index", "--checkpoint", str(setup.checkpoint), "--csv", str(tmp_path / "list.csv"),
                          "--video_dir", str(setup.videos), "--output", str(store), "--num_workers", "0"])
    assert (summary["encoded"], summary["failed"]) == (2, 1)
    assert read_failed(store) == {"nowhere": "missing"}
    ids, embeddings = EmbeddingStore(store).load()
    full_ids, full = EmbeddingStore(indexed[0]).load()
    assert ids == ["video0", "sub/video4.mp4"]
    np.testing.assert_allclose(embeddings[0].astype(np.float32), full[full_ids.index("video0.mp4")], atol=1e-3)


def test_embed_text_matches_encode_text_and_meanp_needs_no_checkpoint(setup, indexed, tmp_path):
    texts = ["a red circle moves from left to right", "a green square"]
    out = tmp_path / "texts.npy"
    features = infer.main(["embed-text", "--store", str(indexed[0]), "--output", str(out), *texts])
    assert np.load(out).dtype == np.float32
    np.testing.assert_array_equal(np.load(out), features)
    np.testing.assert_allclose(features, reference_text(setup, texts).numpy(), atol=1e-5)

    meanp = infer.main(["embed-text", "--prompt", "none", "--pretrained_clip_name", str(setup.clip_path),
                        "--output", str(tmp_path / "meanp.npy"), *texts])
    with torch.no_grad():
        expected = setup.model.clip.encode_text(tokenize(texts, 32))  # meanP: plain CLIP text, default max_words
    np.testing.assert_allclose(meanp, expected.numpy(), atol=1e-5)


def test_visualize_writes_a_png_of_the_expected_size_with_the_model_details(setup, tmp_path):
    png = tmp_path / "figs" / "prompts.png"
    record = infer.main(["visualize", "--checkpoint", str(setup.checkpoint), "--video",
                         str(setup.videos / "video0.mp4"), "--output", str(png), "--frame_px", "50"])
    image = matplotlib.image.imread(png)
    assert image.shape == (125, 250, 4)  # 4 frames: (0.7 + 4 + 0.3) x 50 wide, 2.5 x 50 high
    assert image[..., :3].std() > 0.05  # something was drawn
    video, mask = read_video_tensor(str(setup.videos / "video0.mp4"), 4, 32)
    with torch.no_grad():
        _, details = setup.model.encode_video(video[None], mask[None], return_details=True)
    assert json.loads(png.with_suffix(".json").read_text()) == record
    assert record["region_mask"] == details.region_mask[0].int().tolist()
    np.testing.assert_allclose(record["frame_weights"], details.frame_weights[0].numpy(), atol=1e-6)



def test_visualize_a_video_whose_file_name_is_not_utf8(setup, tmp_path):
    video, png = tmp_path / os.fsdecode(b"vid\xff.mp4"), tmp_path / os.fsdecode(b"fig\xfe.png")
    shutil.copy(setup.videos / "video0.mp4", video)
    record = infer.main(["visualize", "--checkpoint", str(setup.checkpoint), "--video", str(video), "--output",
                         str(png), "--frame_px", "20"])
    assert json.loads(png.with_suffix(".json").read_text()) == record and record["video"] == str(video)
    assert matplotlib.image.imread(png).shape == (50, 100, 4)  # 4 frames of 20 px: the figure is drawn


ERRORS = [
    (lambda s, t: ["index", "--checkpoint", str(t / "none.pt"), "--videos", str(s.videos), "--output", str(t / "o")],
     "checkpoint not found"),
    (lambda s, t: ["index", "--checkpoint", str(t), "--videos", str(s.videos), "--output", str(t / "o")],
     "no ckpt_best.pt or ckpt_last.pt in folder"),
    (lambda s, t: ["index", "--checkpoint", str(s.checkpoint), "--videos", str(t / "nowhere"), "--output",
                   str(t / "o")], "video folder not found"),
    (lambda s, t: ["index", "--checkpoint", str(s.checkpoint), "--videos", str(s.videos / "sub" / "empty"),
                   "--output", str(t / "o")], "no video files under"),
    (lambda s, t: ["index", "--checkpoint", str(s.checkpoint), "--pretrained_clip_name", str(t / "gone.pt"),
                   "--videos", str(s.videos), "--output", str(t / "o")], "CLIP weights not found"),
    (lambda s, t: ["index", "--pretrained_clip_name", str(s.clip_path), "--videos", str(s.videos), "--output",
                   str(t / "o")], "no --checkpoint: the STOP/DGL prompts are trained weights"),
    (lambda s, t: ["index", "--checkpoint", str(s.checkpoint), "--local_each_frame_prompt_length", "3",
                   "--videos", str(s.videos), "--output", str(t / "o")], "same model flags"),
    (lambda s, t: ["index", "--checkpoint", str(s.checkpoint), "--csv", str(s.videos.parent / "names.csv"),
                   "--output", str(t / "o")], "no column named video_path / path / video / video_id"),
    (lambda s, t: ["index", "--checkpoint", str(s.checkpoint), "--device", "gpu", "--videos", str(s.videos),
                   "--output", str(t / "o")], "is not a device"),
    (lambda s, t: ["search", "--store", str(t / "nothing"), "a query"], "no embedding store at"),
    (lambda s, t: ["search", "--store", str(t / "nothing"), "--queries", str(t / "q.txt")], "file not found"),
    (lambda s, t: ["visualize", "--prompt", "none", "--pretrained_clip_name", str(s.clip_path), "--video",
                   str(s.videos / "video0.mp4"), "--output", str(t / "x.png")], "this model has none"),
    (lambda s, t: ["visualize", "--checkpoint", str(s.checkpoint), "--video", str(s.videos / "broken.mp4"),
                   "--output", str(t / "x.png")], "broken.mp4: cannot be opened"),
    (lambda s, t: ["visualize", "--checkpoint", str(s.checkpoint), "--video", str(s.videos / "video0.mp4"),
                   "--output", str(t / "x.png"), "--frame_px", "0"], "visualize --frame_px must be >= 1, got 0"),
    (lambda s, t: ["index", "--checkpoint", str(s.checkpoint), "--videos", str(s.videos), "--output", str(t / "o"),
                   "--num_workers", "-1"], "index --num_workers must be >= 0, got -1"),
    (lambda s, t: ["index", "--checkpoint", str(s.checkpoint), "--videos", str(s.videos), "--output", str(t / "o"),
                   "--chunk_size", "0"], "index --chunk_size must be >= 1, got 0"),
    (lambda s, t: ["search", "--store", str(t / "nothing"), "--top_k", "0", "a query"],
     "search --top_k must be >= 1, got 0"),
    (lambda s, t: ["embed-text", "--checkpoint", str(s.checkpoint), "--max_words", "500", "--output",
                   str(t / "t.npy"), "a dog"], "--max_words 500 exceeds the CLIP's text context (77 tokens"),
    (lambda s, t: ["index", "--checkpoint", str(s.checkpoint), "--pretrained_clip_name", str(s.truncated_clip),
                   "--videos", str(s.videos), "--output", str(t / "o")], "not a readable CLIP weights file"),
    (lambda s, t: ["embed-text", "--prompt", "none", "--pretrained_clip_name", str(s.videos / "broken.mp4"),
                   "--output", str(t / "x.npy"), "a text"], "not a readable CLIP weights file"),
    (lambda s, t: ["index", "--checkpoint", str(s.checkpoint), "--videos", str(s.videos), "--output", str(t / "o"),
                   "--batch_size", "two"], "argument --batch_size: invalid int value: 'two'"),
]


@pytest.mark.parametrize("make_argv, message", ERRORS, ids=[m for _, m in ERRORS])
def test_clear_one_line_errors(setup, tmp_path, make_argv, message):
    (setup.videos / "sub" / "empty").mkdir(exist_ok=True)
    with pytest.raises(SystemExit) as error:
        infer.main(make_argv(setup, tmp_path))
    text = str(error.value.code)
    assert message in text and text.startswith("error:") and "\n" not in text
    assert not (tmp_path / "o").exists() or not any(p.name.endswith(".json") for p in (tmp_path / "o").iterdir())


def test_a_store_is_only_extended_and_searched_by_its_own_model(setup, indexed, tmp_path):
    store = tmp_path / "copy"
    shutil.copytree(indexed[0], store)
    with pytest.raises(SystemExit, match="holds embeddings of another model .*checkpoint_sha256"):
        infer.main(index_argv(setup, store, "--checkpoint", str(setup.other_checkpoint)))
    with pytest.raises(SystemExit, match="differs from the one that wrote"):
        infer.main(["search", "--store", str(store), "--checkpoint", str(setup.other_checkpoint), "a query"])
    with pytest.raises(SystemExit, match="indexes .* not"):
        infer.main(index_argv(setup, store, "--videos", str(setup.videos / "sub")))


def test_command_line_error_is_one_line_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "infer.py", "index", "--checkpoint", str(tmp_path / "missing.pt"),
                             "--videos", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: video folder not found: {tmp_path}/nowhere"]


HOLD_LOCK = """
import sys
from utils.inference.embedding_store import EmbeddingStore
with EmbeddingStore(sys.argv[1]).writer_lock():
    print("locked", flush=True)
    sys.stdin.read()  # until the test closes stdin
"""


def test_a_second_writer_of_a_store_is_refused_naming_the_first_and_readers_need_no_lock(setup, indexed, tmp_path,
                                                                                           monkeypatch):
    store = tmp_path / "store"
    shutil.copytree(indexed[0], store)
    before = {p.name: p.read_bytes() for p in store.iterdir()}
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(store)], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        calls = count_encoded(monkeypatch)
        with pytest.raises(SystemExit) as raised:
            infer.main(index_argv(setup, store))
        message = raised.value.code
        assert message.startswith(f"error: the embedding store {store} is being written by process {holder.pid} "
                                  f"on host {socket.gethostname()} (since "), message
        assert "wait for it to finish" in message and "\n" not in message and calls == []
        # a reader is not blocked by the writer
        results = infer.main(["search", "--store", str(store), setup.query, "--top_k", "1"])
        assert results[0]["results"][0]["id"] == TARGET
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert {p.name: p.read_bytes() for p in store.iterdir() if p.name in before} == before
    summary = infer.main(index_argv(setup, store))  # the lock went with its process
    assert (summary["skipped"], summary["encoded"]) == (6, 0)
    assert EmbeddingStore(store).load()[0] == GOOD


def test_a_first_index_that_failed_before_writing_leaves_a_folder_that_indexes_again(setup, tmp_path):
    store = tmp_path / "new"
    with pytest.raises(SystemExit, match="CLIP weights not found"):  # fails after taking the lock (folder made)
        infer.main(index_argv(setup, store, "--pretrained_clip_name", str(tmp_path / "gone.pt")))
    assert sorted(p.name for p in store.iterdir()) == [".lock"]
    summary = infer.main(index_argv(setup, store))
    assert summary["encoded"] == 6 and sorted(EmbeddingStore(store).load()[0]) == sorted(GOOD)
