"""Issue 11: the release's frame sampling, display rotation, safe caption pickles, empty captions and
truncated videos (check_videos and the training reader agree)."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import pickle
import re
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest
import torch

from dataloaders import BadVideoWarning, DataFileError, build_dataset, load_annotations
from dataloaders.recognition import load_labelled_videos
from dataloaders.sampling import segment_indices
from dataloaders.video_backends import read_frames_opencv
from dataloaders.video_input import read_video_tensor
from dataloaders.video_reader import VideoReadError, inspect_video, read_frames
from preprocess import check_videos
from tests.data_fixtures import (
    RESOLUTION,
    coded_frames,
    data_args,
    frame_index,
    msrvtt_args,
    synthetic_root,
    write_lossless_video,
)

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


# ---------------------------------------------------------------------------------------------------------------
# 1. Frame sampling: the release's multi_segments_sampling by default.

def release_eval(clip_length: int, num_frames: int) -> list[int]:
    """A literal transcription of the release's multi_segments_sampling(random_shift=False, data_length=1)."""
    data_length = 1
    if num_frames > clip_length + data_length - 1:
        tick = (num_frames - data_length + 1) / float(clip_length)
        offsets = [int(tick / 2.0 + tick * x) for x in range(clip_length)]
        offsets = np.array(offsets)
    else:
        offsets = np.clip(np.arange(0, clip_length * data_length, data_length), 0, num_frames - data_length)
    return offsets.tolist()


def padded(indices: list[int], length: int) -> list[int]:
    """What read_video_tensor makes of the indices: the last frame repeated up to `length`."""
    return indices + [indices[-1]] * (length - len(indices))


def test_release_evaluation_indices_equal_the_release_for_every_length():
    differ_from_uniform = 0
    for clip_length in (12, 64):
        for num_frames in range(1, 401):
            indices = segment_indices(num_frames, clip_length, train=False)
            assert padded(indices, clip_length) == release_eval(clip_length, num_frames), (clip_length, num_frames)
            assert indices == sorted(set(indices))  # ascending, the repeats are read_video_tensor's padding
            uniform = segment_indices(num_frames, clip_length, train=False, sampling="uniform")
            differ_from_uniform += padded(uniform, clip_length) != release_eval(clip_length, num_frames)
    assert differ_from_uniform == 492  # the evenly covering rule stays available, and is a different rule


def test_release_training_draws_stay_inside_the_release_segments():
    generator = torch.Generator().manual_seed(0)
    for clip_length in (12, 64):
        for num_frames in range(1, 401):
            average = num_frames // clip_length
            for _ in range(3):
                indices = segment_indices(num_frames, clip_length, train=True, generator=generator)
                if average == 0:
                    assert padded(indices, clip_length) == release_eval(clip_length, num_frames)
                elif num_frames < 2 * clip_length:
                    assert indices == list(range(clip_length))
                else:
                    assert len(indices) == clip_length
                    for x, index in enumerate(indices):
                        assert x * average <= index < (x + 1) * average, (clip_length, num_frames, x, index)


def test_release_training_draws_cover_each_segment_but_never_the_remainder():
    generator = torch.Generator().manual_seed(1)
    seen = [set() for _ in range(4)]
    for _ in range(400):
        for segment, index in enumerate(segment_indices(30, 4, train=True, generator=generator)):
            seen[segment].add(index)
    assert seen == [set(range(0, 7)), set(range(7, 14)), set(range(14, 21)), set(range(21, 28))]  # 28, 29 never


@pytest.mark.parametrize("sampling", ["release", "uniform"])
def test_training_draws_are_a_function_of_the_generator(sampling):
    draws = [[segment_indices(100, 12, True, torch.Generator().manual_seed(seed), sampling) for _ in range(2)]
             for seed in (5, 5, 6)]
    assert draws[0] == draws[1] and draws[0] != draws[2]
    torch.manual_seed(7)
    first = segment_indices(100, 12, True, sampling=sampling)
    torch.manual_seed(7)
    assert segment_indices(100, 12, True, sampling=sampling) == first  # None: torch's global generator


def test_unknown_sampling_is_refused():
    with pytest.raises(ValueError, match="frame sampling must be one of"):
        segment_indices(10, 4, False, sampling="centre")


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    return synthetic_root(tmp_path_factory.getbasetemp())


def test_frame_sampling_flag_reaches_the_dataset(synthetic):
    """8-frame videos, 3 frames: release [1, 4, 6], uniform [1, 3, 6]."""
    video = str(synthetic / "videos" / "video12.mp4")
    clips = {}
    for sampling in ("release", "uniform"):
        flags = ("--max_frames", "3") + (("--frame_sampling", sampling) if sampling != "release" else ())
        dataset = build_dataset(msrvtt_args(synthetic, *flags), "test", RESOLUTION)
        assert dataset.frame_sampling == sampling
        item = dataset.video_view()[dataset.video_ids.index("video12")]
        expected, _ = read_video_tensor(video, 3, 32, sampling=sampling)
        torch.testing.assert_close(item["video"], expected, rtol=0, atol=0)
        clips[sampling] = item["video"]
    assert segment_indices(8, 3, False) == [1, 4, 6] and segment_indices(8, 3, False, sampling="uniform") == [1, 3, 6]
    torch.testing.assert_close(clips["release"][0], clips["uniform"][0], rtol=0, atol=0)
    assert not torch.equal(clips["release"][1], clips["uniform"][1])


def test_decoded_clip_follows_the_release_indices(tmp_path):
    path = write_lossless_video(tmp_path / "v13.mp4", coded_frames(13))
    assert [frame_index(f) for f in read_frames(str(path), 12)] == [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12]
    frames = read_frames(str(path), 12, train=True, generator=torch.Generator().manual_seed(0))
    assert [frame_index(f) for f in frames] == list(range(12))  # T <= N < 2T: always frames 0..T-1


# ---------------------------------------------------------------------------------------------------------------
# 2. Display rotation.

def with_display_matrix(source, target, *flags) -> str:
    subprocess.run([FFMPEG, "-nostdin", "-y", "-loglevel", "error", *flags, "-i", str(source), "-c", "copy",
                    str(target)], check=True)
    return str(target)


@pytest.fixture(scope="module")
def upright(tmp_path_factory):
    """Coded frames whose blue channel also codes the row, so every 90-degree turn and flip is distinguishable."""
    folder = tmp_path_factory.mktemp("rotation")
    frames = coded_frames(6)
    frames[..., 2] = (7 * np.arange(16))[None, :, None]
    return folder, frames, write_lossless_video(folder / "upright.mp4", frames)


@pytest.mark.parametrize("degrees, turns", [(90, 1), (-90, 3), (180, 2), (270, 3)])
def test_rotated_video_decodes_upright(upright, degrees, turns):
    """`-display_rotation D` (counter-clockwise) on a stream copy: the coded frames are the original ones, the
    player shows them turned by D; the reader must give the turned frames, like ffmpeg's autorotate."""
    folder, frames, source = upright
    path = with_display_matrix(source, folder / f"rot{degrees}.mp4", "-display_rotation", str(degrees))
    expected = np.rot90(frames, turns, axes=(1, 2))
    decoded = read_frames(path, 6)
    assert decoded.shape == expected.shape == ((6, 24, 16, 3) if turns % 2 else (6, 16, 24, 3))
    np.testing.assert_array_equal(decoded, expected)
    with open(path, "rb") as file:  # LMDB bytes: the same
        np.testing.assert_array_equal(read_frames(file.read(), 6), expected)
    clip, _ = read_video_tensor(path, 6, 16)
    assert clip.shape == (6, 3, 16, 16)


@pytest.mark.parametrize("flags", [["-display_rotation", "0", "-display_hflip"],
                                   ["-display_rotation", "90", "-display_hflip"],
                                   ["-display_rotation", "-90", "-display_vflip"],
                                   ["-display_rotation", "0", "-display_vflip"],  # FFmpeg's angle of it is 0
                                   ["-display_rotation", "180", "-display_hflip"]])  # the same matrix
def test_flipped_display_matrix_matches_ffmpeg_autorotate(upright, tmp_path, flags):
    folder, frames, source = upright
    path = with_display_matrix(source, tmp_path / "flipped.mp4", *flags)
    reference = tmp_path / "reference.mkv"  # ffmpeg applies the display matrix when it transcodes
    subprocess.run([FFMPEG, "-nostdin", "-y", "-loglevel", "error", "-i", path, "-c:v", "libx264rgb", "-qp", "0",
                    str(reference)], check=True)
    expected = read_frames(str(reference), 6)
    assert expected.shape[1:3] in ((16, 24), (24, 16)) and not np.array_equal(expected[0], frames[0])
    np.testing.assert_array_equal(read_frames(path, 6), expected)


@pytest.mark.skipif(importlib.util.find_spec("cv2") is None, reason="OpenCV is not installed")
@pytest.mark.parametrize("flags", [["-display_rotation", "0", "-display_hflip"],
                                   ["-display_rotation", "0", "-display_vflip"],
                                   ["-display_rotation", "90", "-display_hflip"],
                                   ["-display_rotation", "-90", "-display_vflip"],
                                   ["-display_rotation", "90"], ["-display_rotation", "180"]])
def test_opencv_turns_rotated_and_mirrored_videos_upright_like_pyav_and_ffmpeg(upright, tmp_path, flags):
    """--video_backend opencv: OpenCV's own orientation reads only an angle from the display matrix, so a mirrored
    video came out turned 180 degrees; it must give ffmpeg's autorotated frames, as PyAV does (the frames are
    lossless RGB, so the pixels agree exactly)."""
    _, frames, source = upright
    path = with_display_matrix(source, tmp_path / "flipped.mp4", *flags)
    reference = tmp_path / "reference.mkv"
    subprocess.run([FFMPEG, "-nostdin", "-y", "-loglevel", "error", "-i", path, "-c:v", "libx264rgb", "-qp", "0",
                    str(reference)], check=True)
    expected = read_frames(str(reference), 6)
    np.testing.assert_array_equal(read_frames_opencv(path, 6), expected)
    with open(path, "rb") as file:  # LMDB bytes: the same
        np.testing.assert_array_equal(read_frames_opencv(file.read(), 6), expected)


def test_unrotated_video_is_unchanged(upright):
    _, frames, source = upright
    np.testing.assert_array_equal(read_frames(str(source), 6), frames)


# ---------------------------------------------------------------------------------------------------------------
# 3. Caption pickles cannot run code.

class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def msvd_folder(root, captions, as_pickle: bool):
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        (root / f"{split}_list.txt").write_text("vid_a\nvid_b\n")
    if as_pickle:
        with open(root / "raw-captions.pkl", "wb") as file:
            pickle.dump(captions, file)
    else:
        (root / "raw-captions.json").write_text(json.dumps(captions))
    return root


def msvd_args(root):
    return data_args("--datatype", "msvd", "--data_path", str(root), "--features_path", str(root))


def test_caption_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    root = msvd_folder(tmp_path / "msvd", {"vid_a": [["a", "dog"]], "vid_b": RunsCode(marker)}, as_pickle=True)
    with pytest.raises(DataFileError, match=r"raw-captions\.pkl: refused to load the global (posix|os|nt)\.system"):
        load_annotations(msvd_args(root), "train")
    assert not marker.exists()
    # preprocess/check_videos.py reads the annotations through the same reader
    status = check_videos.main(["--datatype", "msvd", "--split", "test", "--data_path", str(root),
                                "--features_path", str(root), "--output", str(tmp_path / "r.csv"),
                                "--num_workers", "1"])
    assert status == 2 and not marker.exists()


def test_plain_caption_pickle_loads(tmp_path):
    captions = {"vid_a": [["a", "dog", "runs"], "a dog is running"], "vid_b": [["a", "cat"]], "other": [["x"]]}
    root = msvd_folder(tmp_path / "msvd", captions, as_pickle=True)
    annotations = load_annotations(msvd_args(root), "train")
    assert annotations.video_ids == ["vid_a", "vid_b"]
    assert annotations.captions == ["a dog runs", "a dog is running", "a cat"]
    assert annotations.caption_to_video == [0, 0, 1]


def test_garbage_caption_pickle_is_a_data_file_error(tmp_path):
    root = msvd_folder(tmp_path / "msvd", {}, as_pickle=True)
    (root / "raw-captions.pkl").write_bytes(b"\x80\x04not a pickle at all")
    with pytest.raises(DataFileError, match="raw-captions.pkl: not a readable pickle"):
        load_annotations(msvd_args(root), "train")


# ---------------------------------------------------------------------------------------------------------------
# 4. Empty captions are errors in every format.

def test_empty_msrvtt_json_caption_is_named(synthetic, tmp_path):
    data = json.loads((synthetic / "MSRVTT_data.json").read_text())
    rows = [i for i, s in enumerate(data["sentences"]) if s["video_id"] == "video3"]
    data["sentences"][rows[1]]["caption"] = "   "
    path = tmp_path / "MSRVTT_data.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataFileError, match=rf"MSRVTT_data\.json: sentences\[{rows[1]}\] \(caption 1 of video "
                                            r"video3\): empty caption"):
        build_dataset(msrvtt_args(synthetic, data_path=str(path)), "train", RESOLUTION)


@pytest.mark.parametrize("as_pickle", [False, True])
def test_empty_multi_caption_caption_is_named(tmp_path, as_pickle):
    captions = {"vid_a": ["a dog", "a running dog"], "vid_b": ["a cat", ""]}
    if as_pickle:
        captions = {video: [text.split() for text in texts] for video, texts in captions.items()}
    root = msvd_folder(tmp_path / "msvd", captions, as_pickle=as_pickle)
    with pytest.raises(DataFileError, match=r"raw-captions\.(json|pkl): vid_b: caption 1: empty caption"):
        load_annotations(msvd_args(root), "test")


def test_empty_vatex_caption_is_named(tmp_path):
    (tmp_path / "test_list.txt").write_text("v1\n")
    (tmp_path / "ref_captions.json").write_text(json.dumps({"v1": [" \t"]}))
    args = data_args("--datatype", "vatex", "--data_path", str(tmp_path), "--features_path", str(tmp_path))
    with pytest.raises(DataFileError, match=r"ref_captions\.json: v1: caption 0: empty caption"):
        load_annotations(args, "test")


# ---------------------------------------------------------------------------------------------------------------
# 5. Truncated videos: check_videos reports them, the training reader skips them as bad videos.

@pytest.fixture()
def truncated_folder(tmp_path):
    """good.mp4 (20 frames), cut.mp4 (faststart mp4 cut to 60%: decoding fails part way), cut.mkv (mkv cut to
    60%: decoding ends cleanly, half of the stated duration missing)."""
    folder = tmp_path / "videos"
    folder.mkdir()
    write_lossless_video(folder / "good.mp4", coded_frames(20))
    for name, options in (("cut.mp4", {"movflags": "faststart"}), ("cut.mkv", None)):
        whole = write_lossless_video(tmp_path / name, coded_frames(20), options=options).read_bytes()
        (folder / name).write_bytes(whole[: int(len(whole) * 0.6)])
    return folder


def test_check_videos_reports_a_half_decodable_file_as_truncated(truncated_folder, tmp_path):
    report = tmp_path / "report.csv"
    assert check_videos.main(["--folder", str(truncated_folder), "--output", str(report), "--all",
                              "--min_frames", "4", "--num_workers", "1"]) == 1
    with open(report, newline="") as file:
        rows = {row["video"]: row for row in csv.DictReader(file)}
    assert rows["good.mp4"]["status"] == "ok" and rows["good.mp4"]["frames"] == "20"
    for name in ("cut.mp4", "cut.mkv"):
        decoded = inspect_video(str(truncated_folder / name)).decoded
        assert 4 <= decoded < 20
        assert (rows[name]["status"], rows[name]["frames"], rows[name]["stated_frames"]) == ("truncated",
                                                                                           str(decoded), "20")
    assert f"decoding stopped with an error after {rows['cut.mp4']['frames']} of the 20 frames" \
        in rows["cut.mp4"]["detail"]
    assert f"only {rows['cut.mkv']['frames']} of the 20 frames the container states decode" \
        in rows["cut.mkv"]["detail"]


def test_training_reader_skips_truncated_files_as_bad_videos(truncated_folder, tmp_path):
    for name in ("cut.mp4", "cut.mkv"):
        with pytest.raises(VideoReadError) as error:
            read_frames(str(truncated_folder / name), 4)
        assert error.value.kind == "truncated" and "of the 20 frames" in error.value.reason
    table = tmp_path / "pairs.csv"
    table.write_text("video_path,caption\ncut.mp4,a cut video\ngood.mp4,a good video\ncut.mkv,another cut one\n")
    args = data_args("--datatype", "csv", "--train_csv", str(table), "--features_path", str(truncated_folder),
                     "--max_frames", "4", "--max_bad_video_fraction", "0.9", image_resolution=16)
    dataset = build_dataset(args, "train", RESOLUTION)
    torch.manual_seed(0)
    with pytest.warns(BadVideoWarning, match="truncated"):
        items = [dataset[index] for index in range(3)]
    assert [item["video_index"] for item in items] == [1, 1, 1]
    assert all(item["video_mask"].tolist() == [1, 1, 1, 1] for item in items)
    assert sorted(dataset.bad_video_ids) == ["cut.mkv", "cut.mp4"]


class _Reads(torch.utils.data.Dataset):
    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        return torch.from_numpy(read_frames(self.paths[index], 4))


@pytest.mark.parametrize("degrees", [0, 90])
def test_workers_forked_after_decoding_in_the_parent_do_not_deadlock(upright, degrees):
    """Reading a frame's side data leaves a reference cycle; if a forked DataLoader worker collected it, FFmpeg
    would deadlock (it did: the LMDB test hung). The parent decodes first, then two workers read."""
    folder, _, source = upright
    path = source if degrees == 0 else with_display_matrix(source, folder / f"fork{degrees}.mp4",
                                                           "-display_rotation", str(degrees))
    expected = read_frames(str(path), 4)
    loader = torch.utils.data.DataLoader(_Reads([str(path)] * 4), batch_size=1, num_workers=2, timeout=60)
    for batch in loader:
        np.testing.assert_array_equal(batch[0].numpy(), expected)


@pytest.mark.parametrize("datatype", ["activitynet", "didemo"])
def test_an_all_empty_paragraph_is_named(tmp_path, datatype):
    if datatype == "activitynet":
        content = {"v_abc": {"duration": 3.0, "timestamps": [[0, 1], [1, 2]], "sentences": [" ", ""]}}
        (tmp_path / "train.json").write_text(json.dumps(content))
    else:
        (tmp_path / "train_data.json").write_text(json.dumps([{"video": "v1", "description": ["  "]}]))
    with pytest.raises(DataFileError, match="empty caption"):
        load_annotations(data_args("--datatype", datatype, "--data_path", str(tmp_path)), "train")


# ---------------------------------------------------------------------------------------------------------------
# Annotation files that are not UTF-8, or empty: the error names the file (and the line).
K400_HEADER = "label,youtube_id,time_start,time_end,split"
# (reader, datatype, flags: {flag: file name}, {file name: content}, the file made non-UTF-8 / emptied, its empty
# content); "é" is on line 2 of that file and is written as latin-1.
ANNOTATION_FILES = [
    ("retrieval", "msrvtt", {"--data_path": "data.json", "--train_csv": "train.csv"},
     {"train.csv": "video_id\nvidéo0\n", "data.json": '{"sentences": []}'}, "train.csv", "video_id\n"),
    ("retrieval", "msrvtt", {"--data_path": "data.json", "--train_csv": "train.csv"},
     {"train.csv": "video_id\nvideo0\n", "data.json": '{"sentences": [\n{"video_id": "video0", "caption": "café"}]}'},
     "data.json", None),
    ("retrieval", "activitynet", {"--data_path": "."}, {"train.json": '{"v_a":\n{"sentences": ["café"]}}'},
     "train.json", "{}"),
    ("retrieval", "didemo", {"--data_path": "."}, {"train_data.json": '[\n{"video": "a", "description": "café"}]'},
     "train_data.json", "[]"),
    ("retrieval", "vatex", {"--data_path": "."}, {"train_list.txt": "x1\nxé\n", "ref_captions.json": '{"x1": ["a"]}'},
     "train_list.txt", "\n"),
    ("retrieval", "msvd", {"--data_path": "."}, {"train_list.txt": "x1\n", "raw-captions.json": '{"x1":\n["café"]}'},
     "raw-captions.json", None),
    ("retrieval", "lsmdc", {"--data_path": "."},
     {"LSMDC16_annos_training.csv": "c1\t0\t1\t0\t1\tok\nc2\t0\t1\t0\t1\tcafé\n"}, "LSMDC16_annos_training.csv", ""),
    ("retrieval", "csv", {"--train_csv": "pairs.csv"}, {"pairs.csv": "video_path,caption\na.mp4,café\n"},
     "pairs.csv", "video_path,caption\n"),
    ("recognition", "ucf101", {"--data_path": "."},
     {"classInd.txt": "1 YoYo\n", "trainlist01.txt": "YoYo/v_YoYo_g01_c01.avi 1\nYoYo/v_YoYo_café.avi 1\n"},
     "trainlist01.txt", "\r\n"),
    ("recognition", "hmdb51", {"--data_path": "."}, {"yoyo_test_split1.txt": "a.avi 1\ncafé.avi 2\n"},
     "yoyo_test_split1.txt", ""),
    ("recognition", "kinetics400", {"--data_path": "."}, {"train.csv": f"{K400_HEADER}\ncafé,x,1,2,train\n"},
     "train.csv", f"{K400_HEADER}\n"),
    ("recognition", "ssv2", {"--data_path": "."},
     {"labels.json": '{"Pushing something":\n"0"}',
      "something-something-v2-train.json": '[{"id": "1",\n"template": "Pushing [something] café"}]'},
     "something-something-v2-train.json", "[]"),
    ("recognition", "csv", {"--train_csv": "train.csv", "--class_list": "classes.txt"},
     {"train.csv": "path,label\nv.mp4,a\n", "classes.txt": "a\ncafé\n"}, "classes.txt", ""),
]
CASE_NAMES = [f"{case[1]}-{case[4]}" for case in ANNOTATION_FILES]


def load_annotation_case(folder, case, broken: str | None):
    """Write `case`'s files into `folder`, its target file as latin-1 (broken=None) or with `broken` (text),
    and read the training split with the dataset's reader."""
    from tests.test_recognition_data import recognition_args
    reader, datatype, flags, files, target, _ = case
    for name, content in files.items():
        encoded = content.encode("latin-1" if name == target else "utf-8")
        (folder / name).write_bytes(encoded if broken is None or name != target else broken.encode())
    args = recognition_args(datatype, None, *[part for flag, name in flags.items()
                                              for part in (flag, str(folder / name))])
    if reader == "retrieval":
        return load_annotations(args, "train")
    return load_labelled_videos(args, "train")


@pytest.mark.parametrize("case", ANNOTATION_FILES, ids=CASE_NAMES)
def test_a_non_utf8_annotation_file_is_named_with_its_line(tmp_path, case):
    target = tmp_path / case[4]
    with pytest.raises(DataFileError, match=re.escape(f"{target}: line 2: not UTF-8 text (byte 0xe9 at byte")
                       + r".*save the file as UTF-8"):
        load_annotation_case(tmp_path, case, None)


@pytest.mark.parametrize("case", [case for case in ANNOTATION_FILES if case[5] is not None],
                         ids=[name for name, case in zip(CASE_NAMES, ANNOTATION_FILES) if case[5] is not None])
def test_an_empty_split_file_is_named(tmp_path, case):
    target = tmp_path / case[4]
    with pytest.raises(DataFileError, match=re.escape(f"{target}: ") + r".*(empty|no rows under the header)"):
        load_annotation_case(tmp_path, case, case[5])
