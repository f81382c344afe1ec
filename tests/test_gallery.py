"""infer.py search --gallery: the HTML holds every query with its top-k results (rank, score, id as search
returns them) and each thumbnail strip decodes to the frames read from its video; the PNG draws the same rows;
a video that cannot be found gets a strip saying so; bad gallery names are refused before any work; a file name
that is not UTF-8 is indexed, searched and shown escaped."""
from __future__ import annotations

import base64
import io
import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import infer
from dataloaders.video_reader import read_frames
from tests.conftest import meanp_index_argv
from utils.inference.embedding_store import EmbeddingStore

QUERIES = ["a red circle moves left", "a green square"]


class GalleryParser(HTMLParser):
    """sections: [{"query", "results": [{"rank", "id", "score", "image": PIL image, "caption"}]}]."""

    def __init__(self):
        super().__init__()
        self.sections, self._in = [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append({"query": "", "results": []})
        elif tag in ("h2", "figcaption"):
            self._in = tag
        elif tag == "figure":
            self.sections[-1]["results"].append({"rank": int(attrs["data-rank"]), "id": attrs["data-id"],
                                                 "score": float(attrs["data-score"]), "caption": ""})
        elif tag == "img":
            kind, data = attrs["src"].split(",", 1)
            assert kind == "data:image/jpeg;base64"
            self.sections[-1]["results"][-1]["image"] = Image.open(io.BytesIO(base64.b64decode(data)))

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in == "h2":
            self.sections[-1]["query"] += data
        elif self._in == "figcaption":
            self.sections[-1]["results"][-1]["caption"] += data


def search(store: Path, gallery: Path, *extra: str) -> list:
    return infer.main(["search", "--store", str(store), "--top_k", "3", "--gallery", str(gallery), *extra, *QUERIES])


def test_html_gallery_shows_each_query_with_its_results_as_decodable_strips(meanp_store, tmp_path):
    _, videos, store = meanp_store
    results = search(store, tmp_path / "out.html", "--gallery_frames", "3", "--thumb_px", "40")
    parser = GalleryParser()
    parser.feed((tmp_path / "out.html").read_text())
    assert [s["query"] for s in parser.sections] == QUERIES
    for section, result in zip(parser.sections, results):
        assert [{k: h[k] for k in ("rank", "id", "score")} for h in section["results"]] == result["results"]
        for hit in section["results"]:
            assert hit["caption"] == f"{hit['rank']}. {hit['score']:.4f} {hit['id']}"
            frames = read_frames(str(videos / hit["id"]), 3)  # 32 x 32 px: 3 thumbnails of 40 x 40
            strip = np.asarray(hit["image"].convert("RGB"), dtype=np.float32)
            assert strip.shape == (40, 120, 3)
            expected = np.concatenate([np.asarray(Image.fromarray(f).resize((40, 40), Image.BILINEAR)) for f in frames],
                                      axis=1).astype(np.float32)
            assert np.abs(strip - expected).mean() < 4  # the video's sampled frames, up to JPEG
    assert "<script" not in (tmp_path / "out.html").read_text()  # nothing fetched or run: self-contained


def test_png_gallery_and_a_video_that_cannot_be_found(meanp_store, tmp_path):
    _, _, store = meanp_store
    moved = tmp_path / "store"
    moved.mkdir()
    for name in ("embeddings.npy", "ids.json"):
        (moved / name).write_bytes((store / name).read_bytes())
    metadata = json.loads((store / "metadata.json").read_text())
    (moved / "metadata.json").write_text(json.dumps({**metadata, "source": {"videos": str(tmp_path / "gone")}}))
    search(moved, tmp_path / "out.png", "--thumb_px", "20")
    image = np.asarray(Image.open(tmp_path / "out.png").convert("RGB"))
    rows = 1 + len(QUERIES) * 4  # title, then per query its line and 3 results
    assert image.shape[0] == 8 + rows * 14 + len(QUERIES) * 3 * (20 + 4)
    assert (image == 128).all(axis=2).sum() == len(QUERIES) * 3 * 20 * 4 * 36  # the grey strips, 16:9 frames
    search(moved, tmp_path / "out.html")
    assert (tmp_path / "out.html").read_text().count("(video file not found)</figcaption>") == 6


@pytest.mark.parametrize("name, message", [("out.gif", "--gallery {}: the name must end in .html, .htm, .png"),
                                           ("exists.html", "--gallery {} exists; choose another name or delete it")])
def test_bad_gallery_names_are_refused_before_the_search(meanp_store, tmp_path, name, message):
    (tmp_path / "exists.html").write_text("keep me")
    with pytest.raises(SystemExit) as error:
        search(meanp_store[2], tmp_path / name)
    assert str(error.value.code) == "error: " + message.format(tmp_path / name)
    assert (tmp_path / "exists.html").read_text() == "keep me"


def test_a_file_name_that_is_not_utf8_is_indexed_searched_and_shown_escaped(meanp_store, tmp_path, capsys):
    clip, videos, _ = meanp_store
    folder = tmp_path / "videos"
    folder.mkdir()
    name, broken = os.fsdecode(b"vid\xff.mp4"), os.fsdecode(b"bad\xfe.mp4")  # bytes that are not UTF-8
    shutil.copy(videos / "video0.mp4", folder / name)
    shutil.copy(videos / "video1.mp4", folder / "plain.mp4")
    (folder / broken).write_bytes(b"not a video")
    store = tmp_path / "store"
    infer.main(meanp_index_argv(clip, folder, store))
    assert sorted(EmbeddingStore(store).load()[0]) == sorted([name, "plain.mp4"])  # the name as the file system has it
    assert list(EmbeddingStore(store).failures()) == [broken]
    capsys.readouterr()
    results = search(store, tmp_path / "out.html")  # stdout is UTF-8 here, as on a terminal
    assert {hit["id"] for hit in results[0]["results"]} == {name, "plain.mp4"}
    printed = capsys.readouterr().out
    assert "vid\\xff.mp4" in printed and "plain.mp4" in printed
    parser = GalleryParser()
    parser.feed((tmp_path / "out.html").read_text(encoding="utf-8"))
    shown = {hit["id"]: hit for hit in parser.sections[0]["results"]}
    assert set(shown) == {"vid\\xff.mp4", "plain.mp4"}  # escaped as Python writes the byte
    assert shown["vid\\xff.mp4"]["caption"].endswith(" vid\\xff.mp4")  # found and read: no "(video file not found)"
    search(store, tmp_path / "out.png")
    assert Image.open(tmp_path / "out.png").size[1] > 0
