"""preprocess/: compress_video on landscape, portrait and broken inputs; check_videos; folder_to_lmdb."""

from __future__ import annotations

import csv
import shutil
import subprocess

import av
import lmdb
import numpy as np
import pytest

from dataloaders.synthetic import write_video
from dataloaders.video_reader import read_frames
from preprocess import check_videos, compress_video, folder_to_lmdb
from tests.data_fixtures import msrvtt_args, synthetic_root

SIZES = {"landscape": (180, 320), "sub/portrait": (320, 180), "odd_aspect": (130, 250)}  # (height, width)


@pytest.fixture(scope="module")
def raw_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    rng = np.random.default_rng(0)
    for name, (height, width) in SIZES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        frames = rng.integers(0, 255, (20, height, width, 3), dtype=np.uint8)  # 2 s at 10 fps
        write_video(str(root / f"{name}.mp4"), frames, fps=10, codec="mpeg4")
    (root / "broken.avi").write_bytes(b"not a video" * 50)
    (root / "notes.txt").write_text("ignored: not a video")
    return root


def read_csv_rows(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_compress_keeps_aspect_short_side_224_at_3_fps_and_reports_failures(raw_videos, tmp_path, capsys):
    output = tmp_path / "out"
    assert compress_video.main(["--input_root", str(raw_videos), "--output_root", str(output),
                                "--num_workers", "2"]) == 1
    assert "broken.avi" in capsys.readouterr().err
    failures = read_csv_rows(output / compress_video.FAILURES_FILE)
    assert [row["video"] for row in failures] == [str(raw_videos / "broken.avi")] and failures[0]["error"]
    assert sorted(p.name for p in output.iterdir()) == ["compress_failures.csv", "landscape.mp4",
                                                        "odd_aspect.mp4", "portrait.mp4"]
    for name, (height, width) in SIZES.items():
        with av.open(str(output / f"{name.split('/')[-1]}.mp4")) as container:
            stream = container.streams.video[0]
            assert stream.average_rate == 3 and stream.frames == 6
            out_height, out_width = stream.height, stream.width
            assert not container.streams.audio
        assert min(out_height, out_width) == 224 and out_height % 2 == 0 and out_width % 2 == 0
        assert (out_height > out_width) == (height > width)
        exact_long = 224 * max(height, width) / min(height, width)
        assert abs(max(out_height, out_width) - exact_long) <= 1

    # a second run skips what exists and leaves it untouched
    before = (output / "landscape.mp4").stat().st_mtime_ns
    assert compress_video.main(["--input_root", str(raw_videos), "--output_root", str(output)]) == 1
    assert "3 already compressed, 1 to do" in capsys.readouterr().out
    assert (output / "landscape.mp4").stat().st_mtime_ns == before


def test_compress_mirror_and_clean_run(raw_videos, tmp_path):
    source = tmp_path / "in"
    shutil.copytree(raw_videos, source)
    (source / "broken.avi").unlink()
    output = tmp_path / "out"
    assert compress_video.main(["--input_root", str(source), "--output_root", str(output), "--mirror"]) == 0
    assert (output / "sub" / "portrait.mp4").is_file() and not (output / compress_video.FAILURES_FILE).exists()


def test_compressed_rotated_video_reads_like_the_raw_one(tmp_path):
    """A phone video (landscape coded frames, display rotation 90): compress_video turns it upright (ffmpeg
    autorotates), and the frame reader turns the raw file upright too, so both give the same portrait frames."""
    coded = np.zeros((6, 64, 96, 3), np.uint8)
    coded[:, :32, :48] = 255  # bright top-left quadrant of the coded frame: bottom-left once upright
    coded[:, 32:, 48:, 1] = 160
    (tmp_path / "in").mkdir()
    plain = tmp_path / "plain.mp4"
    write_video(str(plain), coded, fps=3)
    subprocess.run([compress_video.find_ffmpeg(), "-nostdin", "-y", "-loglevel", "error", "-display_rotation",
                    "90", "-i", str(plain), "-c", "copy", str(tmp_path / "in" / "phone.mp4")], check=True)
    assert compress_video.main(["--input_root", str(tmp_path / "in"), "--output_root", str(tmp_path / "out"),
                                "--size", "32", "--num_workers", "1"]) == 0
    raw = read_frames(str(tmp_path / "in" / "phone.mp4"), 1)[0].astype(float)
    compressed = read_frames(str(tmp_path / "out" / "phone.mp4"), 1)[0].astype(float)
    assert raw.shape == (96, 64, 3) and compressed.shape == (48, 32, 3)
    halved = raw.reshape(48, 2, 32, 2, 3).mean(axis=(1, 3))
    assert np.abs(halved - compressed).mean() < 12
    assert compressed[40, 8].mean() > 200 and compressed[8, 8].mean() < 60  # bright bottom-left


def test_compress_flat_name_clash_is_a_failure(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / "in" / folder).mkdir(parents=True)
        write_video(str(tmp_path / "in" / folder / "same.mp4"), np.zeros((3, 16, 16, 3), np.uint8), fps=3)
    jobs, clashes = compress_video.plan(str(tmp_path / "in"), str(tmp_path / "out"), mirror=False)
    assert len(jobs) == 1 and len(clashes) == 1 and "same output" in clashes[0][1]


def test_check_videos_folder_report(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    write_video(str(folder / "good.mp4"), np.zeros((12, 16, 16, 3), np.uint8), fps=3)
    write_video(str(folder / "short.mp4"), np.zeros((4, 16, 16, 3), np.uint8), fps=3)
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "corrupt.mkv").write_bytes(b"\x1aE\xdf\xa3" + b"junk" * 100)
    report = tmp_path / "report.csv"
    assert check_videos.main(["--folder", str(folder), "--output", str(report), "--num_workers", "1"]) == 1
    statuses = {row["video"]: (row["status"], row["frames"]) for row in read_csv_rows(report)}
    assert statuses == {"short.mp4": ("too_short", "4"), "empty.mp4": ("empty", "0"),
                        "corrupt.mkv": ("unreadable", "0")}
    assert check_videos.main(["--folder", str(folder), "--output", str(report), "--all", "--min_frames", "4",
                              "--num_workers", "2", "--overwrite"]) == 1
    statuses = {row["video"]: row["status"] for row in read_csv_rows(report)}
    assert statuses["good.mp4"] == "ok" and statuses["short.mp4"] == "ok" and len(statuses) == 4


def test_check_videos_dataset_split(tmp_path_factory, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synthetic_root(tmp_path_factory.getbasetemp()), root)
    (root / "videos" / "video13.mp4").unlink()
    args = msrvtt_args(root)
    report = tmp_path / "report.csv"
    flags = ["--datatype", "msrvtt", "--split", "test", "--val_csv", args.val_csv, "--features_path",
             args.features_path, "--max_frames", "8", "--output", str(report), "--num_workers", "1"]
    assert check_videos.main(flags) == 1
    assert [(row["video"], row["status"]) for row in read_csv_rows(report)] == [("video13", "missing")]


def test_folder_to_lmdb_stores_bytes_by_basename_and_refuses_clashes(tmp_path):
    (tmp_path / "in" / "x").mkdir(parents=True)
    (tmp_path / "in" / "a.mp4").write_bytes(b"first")
    (tmp_path / "in" / "x" / "b.webm").write_bytes(b"second")
    assert folder_to_lmdb.main(["--input_root", str(tmp_path / "in"), "--output", str(tmp_path / "db")]) == 0
    with lmdb.open(str(tmp_path / "db"), readonly=True) as env, env.begin() as txn:
        assert dict(txn.cursor()) == {b"a.mp4": b"first", b"b.webm": b"second"}
    (tmp_path / "in" / "x" / "a.mp4").write_bytes(b"clash")
    with pytest.raises(ValueError, match="two videos named a.mp4"):
        folder_to_lmdb.folder_to_lmdb(str(tmp_path / "in"), str(tmp_path / "db2"), progress=False)
