"""Nothing overwritten unless asked, and an input never (utils/output_file.py): infer.py visualize and embed-text,
preprocess/check_videos.py and scripts/renormalise.py refuse an --output that is one of their inputs or a file of
an embedding store (even with --overwrite), and an existing --output without --overwrite, before any work."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

import infer
from preprocess import check_videos
from scripts.renormalise import main as renormalise_main
from tests import test_infer
from tests.conftest import one_line_error

setup, indexed = test_infer.setup, test_infer.indexed  # fixtures: the tiny STOP model, its store of 6 videos


def visualize_argv(setup, video: Path, output: Path, *extra: str) -> list[str]:
    return ["visualize", "--checkpoint", str(setup.checkpoint), "--video", str(video), "--output", str(output),
            "--frame_px", "20", *extra]


def test_visualize_never_replaces_its_video_nor_a_figure_unless_asked(setup, tmp_path):
    video = tmp_path / "clip.mp4"
    shutil.copy(setup.videos / "video0.mp4", video)
    before = video.read_bytes()
    for extra in ((), ("--overwrite",)):
        message = one_line_error(infer.main, visualize_argv(setup, video, video, *extra))
        assert message == f"error: --output {video} is the --video input; it is never replaced: choose another name"
    message = one_line_error(infer.main, visualize_argv(setup, video, tmp_path / "x.json"))
    assert "--output " + str(tmp_path / "x.json") + ": the figure's numbers are written to the same name" in message
    assert not (tmp_path / "x.json").exists()

    png = tmp_path / "fig.png"
    infer.main(visualize_argv(setup, video, png))
    first = png.read_bytes(), png.with_suffix(".json").read_text()
    message = one_line_error(infer.main, visualize_argv(setup, video, png))
    assert message == f"error: --output {png} exists; choose another name or delete it (or pass --overwrite to " \
                      "replace it)"
    png.unlink()  # the numbers alone are not replaced either
    message = one_line_error(infer.main, visualize_argv(setup, video, png))
    assert f"--output {png}: its numbers {png.with_suffix('.json')} exists" in message
    infer.main(visualize_argv(setup, video, png, "--overwrite"))
    assert (png.read_bytes(), png.with_suffix(".json").read_text()) == first
    assert video.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "clip.mp4", "fig.json", "fig.png"]  # no temporaries left


def test_embed_text_never_writes_into_a_store_and_replaces_a_file_only_when_asked(setup, indexed, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(indexed[0], store)
    before = {p.name: p.read_bytes() for p in store.iterdir()}
    for output, extra in ((store / "embeddings.npy", ()), (store / "embeddings", ("--overwrite",))):
        name = output if output.suffix else output.with_name(output.name + ".npy")
        message = one_line_error(infer.main, ["embed-text", "--store", str(store), "--output", str(output),
                                              *extra, "a dog"])
        assert message == f"error: --output {name} is a file of the embedding store {store}; it is never " \
                          "replaced: choose another name"
    assert {p.name: p.read_bytes() for p in store.iterdir()} == before
    assert infer.main(["search", "--store", str(store), setup.query, "--top_k", "1"])[0]["results"]

    queries = tmp_path / "queries.npy"  # a text file, whatever its name
    queries.write_text("a dog\n")
    message = one_line_error(infer.main, ["embed-text", "--store", str(store), "--queries", str(queries),
                                          "--output", str(queries), "--overwrite"])
    assert message == f"error: --output {queries} is the --queries input; it is never replaced: choose another name"
    assert queries.read_text() == "a dog\n"
    texts = tmp_path / "texts.npy"
    texts.write_bytes(b"keep")
    message = one_line_error(infer.main, ["embed-text", "--store", str(store), "--output", str(texts), "a dog"])
    assert message.endswith(f"--output {texts} exists; choose another name or delete it (or pass --overwrite to "
                            "replace it)")
    assert texts.read_bytes() == b"keep"
    features = infer.main(["embed-text", "--store", str(store), "--output", str(texts), "--overwrite", "a dog"])
    np.testing.assert_array_equal(np.load(texts), features)


def test_check_videos_never_writes_its_report_over_a_video_and_replaces_one_only_when_asked(setup, tmp_path,
                                                                                            capsys):
    folder = tmp_path / "videos"
    shutil.copytree(setup.videos, folder)
    video = folder / "video0.mp4"
    before = video.read_bytes()
    for extra in ((), ("--overwrite",)):
        assert check_videos.main(["--folder", str(folder), "--output", str(video), "--num_workers", "1",
                                  *extra]) == 2
        assert capsys.readouterr().err.strip() == f"error: --output {video} is a video it checks; it is never " \
                                                  "replaced: choose another name"
    assert video.read_bytes() == before
    report = tmp_path / "report.csv"
    report.write_text("keep")
    assert check_videos.main(["--folder", str(folder), "--output", str(report), "--num_workers", "1"]) == 2
    assert "exists; choose another name or delete it (or pass --overwrite" in capsys.readouterr().err
    assert report.read_text() == "keep"
    assert check_videos.main(["--folder", str(folder), "--output", str(report), "--num_workers", "1",
                              "--overwrite"]) == 1  # the broken and empty videos
    assert report.read_text().startswith("video,path,status")


def test_renormalise_never_writes_over_its_matrix_and_replaces_a_result_only_when_asked(tmp_path):
    matrix = tmp_path / "similarity_test.pt"
    torch.save({"similarity": torch.eye(3), "caption_to_video": torch.arange(3)}, matrix)
    before = matrix.read_bytes()
    for extra in ((), ("--overwrite",)):
        message = one_line_error(renormalise_main, [str(matrix), "--dual_softmax", "--output", str(matrix), *extra])
        assert message == f"error: --output {matrix} is the similarity file read; it is never replaced: choose " \
                          "another name"
    assert matrix.read_bytes() == before
    result = renormalise_main([str(matrix), "--dual_softmax"])
    output = tmp_path / "similarity_test_post_processed.json"
    message = one_line_error(renormalise_main, [str(matrix), "--dual_softmax"])
    assert message == f"error: --output {output} exists; choose another name or delete it (or pass --overwrite to " \
                      "replace it)"
    assert renormalise_main([str(matrix), "--dual_softmax", "--overwrite"]) == result
