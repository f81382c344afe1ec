"""Dataset classes on tiny fixtures in each dataset's real file format, item formats and evaluation views."""

from __future__ import annotations

import json
import pickle
import re
import shutil

import numpy as np
import pytest
import torch

from dataloaders import DATASETS, DataFileError, build_dataset
from dataloaders.synthetic import write_video
from dataloaders.video_input import read_video_tensor
from models.tokenizer import tokenize
from preprocess.folder_to_lmdb import folder_to_lmdb
from tests.conftest import FRAMES, TINY, tiny_model
from tests.data_fixtures import RESOLUTION, data_args, msrvtt_args, synthetic_root


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    return synthetic_root(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    """One small generated video, copied under whatever names a fixture needs."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    frames = np.random.default_rng(0).integers(0, 255, (6, 32, 48, 3), dtype=np.uint8)
    write_video(str(path), frames, fps=3)
    return path


def place(clip_file, folder, *names):
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clip_file, folder / name)
    return folder


def check_item(item, max_words=32, max_frames=12, size=32):
    assert item["text"].shape == (max_words,) and item["text"].dtype == torch.long
    assert item["video"].shape == (max_frames, 3, size, size) and item["video"].dtype == torch.float32
    assert item["video_mask"].shape == (max_frames,) and item["video_mask"].dtype == torch.long
    assert torch.isfinite(item["video"]).all() and item["video"].abs().sum() > 0


def test_registry_has_every_dataset():
    assert sorted(DATASETS) == ["activitynet", "csv", "didemo", "lsmdc", "msrvtt", "msvd", "vatex"]


def test_msrvtt_train_one_item_per_video_with_random_caption(synthetic):
    dataset = build_dataset(msrvtt_args(synthetic, "--max_frames", "4"), "train", RESOLUTION)
    assert len(dataset) == 12 and len(dataset.captions) == 36 and dataset.video_ids[0] == "video0"
    assert dataset.caption_to_video.tolist() == [v for v in range(12) for _ in range(3)]
    torch.manual_seed(0)
    seen = set()
    for _ in range(20):
        item = dataset[5]
        check_item(item, max_frames=4)
        assert item["video_index"] == 5 and dataset.caption_to_video[item["caption_index"]] == 5
        assert torch.equal(item["text"], tokenize(dataset.captions[item["caption_index"]], 32)[0])
        seen.add(item["caption_index"])
    assert seen == {15, 16, 17}


def test_msrvtt_expanded_sentences_one_item_per_pair(synthetic):
    dataset = build_dataset(msrvtt_args(synthetic, "--expand_msrvtt_sentences", "--max_frames", "4"), "train",
                            RESOLUTION)
    assert len(dataset) == 36
    item = dataset[7]
    assert item["caption_index"] == 7 and item["video_index"] == 2


def test_msrvtt_test_split_and_views(synthetic):
    dataset = build_dataset(msrvtt_args(synthetic, "--max_words", "16", "--max_frames", "8"), "test", RESOLUTION)
    with open(synthetic / "synthetic_metadata.json") as file:
        test_ids = [v["video_id"] for v in json.load(file) if v["split"] == "test"]
    assert dataset.video_ids == test_ids and len(dataset.captions) == 6
    assert dataset.caption_to_video.tolist() == list(range(6))
    text = dataset.text_view()[3]
    assert text["caption_index"] == 3 and torch.equal(text["text"], tokenize(dataset.captions[3], 16)[0])
    video = dataset.video_view()[2]
    assert video["valid"] and video["video_index"] == 2
    expected, mask = read_video_tensor(str(synthetic / "videos" / f"{test_ids[2]}.mp4"), 8, 32, train=False)
    torch.testing.assert_close(video["video"], expected, rtol=0, atol=0)
    assert torch.equal(video["video_mask"], mask) and mask.tolist() == [1] * 8
    # evaluation items are deterministic, training items sample frames at random
    assert torch.equal(dataset[2]["video"], dataset[2]["video"])


def test_truncated_caption_keeps_eot(synthetic):
    dataset = build_dataset(msrvtt_args(synthetic, "--max_words", "5"), "test", RESOLUTION)
    text = dataset.text_view()[0]["text"]
    assert text[0] == 49406 and text[-1] == 49407 and (text != 0).all()


def test_holdout_validation_split_is_disjoint_from_training(synthetic):
    args = msrvtt_args(synthetic, "--holdout_val_videos", "3")
    train, val = build_dataset(args, "train", RESOLUTION), build_dataset(args, "val", RESOLUTION)
    assert len(val.video_ids) == 3 and len(train.video_ids) == 9
    assert not set(val.video_ids) & set(train.video_ids)
    assert len(val.captions) == 9 and val.caption_to_video.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert not val.train and val.video_ids == build_dataset(args, "val", RESOLUTION).video_ids


def test_lmdb_source_gives_the_same_items(synthetic, tmp_path):
    lmdb_path = tmp_path / "videos.lmdb"
    assert folder_to_lmdb(str(synthetic / "videos"), str(lmdb_path), progress=False) == 18
    assert folder_to_lmdb(str(synthetic / "videos"), str(lmdb_path), progress=False) == 0  # resumable
    from_folder = build_dataset(msrvtt_args(synthetic), "test", RESOLUTION)
    from_lmdb = build_dataset(msrvtt_args(synthetic, "--lmdb_dataset", str(lmdb_path)), "test", RESOLUTION)
    assert torch.equal(from_lmdb.video_view()[4]["video"], from_folder.video_view()[4]["video"])
    loader = torch.utils.data.DataLoader(from_lmdb.video_view(), batch_size=3, num_workers=2)
    assert sum(batch["valid"].sum().item() for batch in loader) == 6


def test_activitynet_paragraphs_and_v_prefix(tmp_path, clip_file):
    videos = place(clip_file, tmp_path / "videos", "abc.mp4", "v_def.mkv")
    entry = {"duration": 10.0, "timestamps": [[0, 4], [4, 10]], "sentences": [" A man runs.", "He stops. "]}
    (tmp_path / "train.json").write_text(json.dumps({"v_abc": entry, "v_def": {**entry, "sentences": ["x"]}}))
    (tmp_path / "val_1.json").write_text(json.dumps({"v_def": entry}))
    args = data_args("--datatype", "activitynet", "--data_path", str(tmp_path), "--features_path", str(videos),
                     "--max_frames", "4")
    train = build_dataset(args, "train", RESOLUTION)
    assert train.video_ids == ["v_abc", "v_def"] and train.captions == ["A man runs. He stops.", "x"]
    assert train.video_keys == [str(videos / "abc.mp4"), str(videos / "v_def.mkv")]
    check_item(train[0], max_frames=4)
    assert build_dataset(args, "test", RESOLUTION).video_ids == ["v_def"]


def test_didemo_moments_grouped_into_paragraphs(tmp_path, clip_file):
    videos = place(clip_file, tmp_path / "videos", "a.mp4", "b.mp4")
    moments = [{"video": "a.mov", "times": [[0, 1]], "description": "first"},
               {"video": "b.mov", "times": [[0, 1]], "description": ["only b"]},
               {"video": "a.mov", "times": [[2, 3]], "description": "second"}]
    for split in ("train", "test"):
        (tmp_path / f"{split}_data.json").write_text(json.dumps(moments))
    args = data_args("--datatype", "didemo", "--data_path", str(tmp_path), "--features_path", str(videos))
    test = build_dataset(args, "test", RESOLUTION)
    assert test.video_ids == ["a.mov", "b.mov"] and test.captions == ["first second", "only b"]
    assert test.video_view()[0]["valid"]


@pytest.mark.parametrize("datatype", ["vatex", "msvd"])
def test_multi_caption_datasets(tmp_path, clip_file, datatype):
    videos = place(clip_file, tmp_path / "videos", "x1.mp4", "x2.avi", "x3.mp4")
    (tmp_path / "train_list.txt").write_text("x1\nx2\n")
    (tmp_path / "test_list.txt").write_text("x3\nx1\n")
    captions = {"x1": ["one a", "one b"], "x2": ["two"], "x3": ["three a", "three b", "three c"]}
    if datatype == "vatex":
        (tmp_path / "ref_captions.json").write_text(json.dumps(captions))
    else:  # CLIP4Clip's MSVD pickle: captions as lists of words
        with open(tmp_path / "raw-captions.pkl", "wb") as file:
            pickle.dump({k: [c.split() for c in v] for k, v in captions.items()}, file)
    args = data_args("--datatype", datatype, "--data_path", str(tmp_path), "--features_path", str(videos))
    train = build_dataset(args, "train", RESOLUTION)
    assert len(train) == 3 and train.captions == ["one a", "one b", "two"]
    test = build_dataset(args, "test", RESOLUTION)
    assert test.video_ids == ["x3", "x1"]
    assert test.caption_to_video.tolist() == [0, 0, 0, 1, 1]
    assert build_dataset(args, "val", RESOLUTION).video_ids == ["x3", "x1"]  # no val list: the test list


def test_lsmdc_tab_separated_clips_in_movie_folders(tmp_path, clip_file):
    clip_id = "1004_Juno_00.00.32.849-00.00.38.804"
    videos = place(clip_file, tmp_path / "videos", f"1004_Juno/{clip_id}.avi", "1005_X/1005_X_00.01.avi")
    lines = [f"{clip_id}\t00.00.32.849\t00.00.38.804\t00.00.32.000\t00.00.39.000\tSomeone walks in.",
             "1005_X_00.01\t0\t1\t0\t1\tSomeone sits."]
    (tmp_path / "LSMDC16_challenge_1000_publictect.csv").write_text("\n".join(lines) + "\n")
    args = data_args("--datatype", "lsmdc", "--data_path", str(tmp_path), "--features_path", str(videos))
    test = build_dataset(args, "test", RESOLUTION)
    assert test.video_ids == [clip_id, "1005_X_00.01"] and test.captions[0] == "Someone walks in."
    assert test.video_keys[0] == str(videos / "1004_Juno" / f"{clip_id}.avi")


def test_custom_csv_relative_paths_and_shared_videos(tmp_path, clip_file):
    videos = place(clip_file, tmp_path / "videos", "cats/a.mp4", "dogs/b.mp4")
    (tmp_path / "pairs.csv").write_text("video_path,caption\ncats/a.mp4,a cat\ndogs/b.mp4,a dog\n"
                                        "cats/a.mp4,a small cat\n")
    args = data_args("--datatype", "csv", "--val_csv", str(tmp_path / "pairs.csv"), "--features_path",
                     str(videos))
    test = build_dataset(args, "test", RESOLUTION)
    assert test.video_ids == ["cats/a.mp4", "dogs/b.mp4"] and test.caption_to_video.tolist() == [0, 1, 0]
    check_item(test[2])
    with pytest.raises(DataFileError, match="--train_csv"):
        build_dataset(args, "train", RESOLUTION)


def test_ids_that_differ_only_in_folder_find_their_own_files_and_an_ambiguous_name_is_refused(tmp_path, clip_file):
    cameras = [f"cam{k}/clip.mp4" for k in range(1, 5)]
    videos = place(clip_file, tmp_path / "videos", *cameras)
    rows = "".join(f"videos/{name},camera {name[3]}\n" for name in cameras)  # ids relative to tmp_path
    (tmp_path / "cameras.csv").write_text("video_path,caption\n" + rows)
    args = data_args("--datatype", "csv", "--val_csv", str(tmp_path / "cameras.csv"), "--features_path",
                     str(videos))
    assert build_dataset(args, "test", RESOLUTION).video_keys == [str(videos / name) for name in cameras]
    (tmp_path / "by_name.csv").write_text("video_path,caption\nclip,a camera\n")
    with pytest.raises(DataFileError, match=r"video id 'clip' matches 4 files by name under .*videos \("
                                            r"cam1/clip.mp4, cam2/clip.mp4, cam3/clip.mp4, cam4/clip.mp4\).*"
                                            r"write the id as its path relative to"):
        build_dataset(data_args("--datatype", "csv", "--val_csv", str(tmp_path / "by_name.csv"),
                                "--features_path", str(videos)), "test", RESOLUTION)


MALFORMED = [  # (flag, split, file content, what the error says after the file name)
    ("val_csv", "test", "key,vid_key,video_id,sentence\nret0,msr0,video0,a caption\nret1,msr1,,another\n",
     r"line 3 \(data row 2\) has an empty 'video_id'"),
    ("val_csv", "test", "video,sentence\nvideo0,x\n", r"missing column\(s\) \['video_id'\]"),
    ("data_path", "train", '{"sentences": [{"video_id": "video0", "caption": "x"},\n {"video_id": "video1"}]}',
     r"sentences\[1\]: needs string 'video_id' and 'caption'"),
    ("data_path", "train", '{"sentences": [\n{"video_id": "video0",}]}', r"invalid JSON at line 2"),
    ("data_path", "train", '{"sentences": [{"video_id": "video0", "caption": "x"}]}',
     r"sentences: no caption of training video video1"),
]


@pytest.mark.parametrize("flag, split, content, message", MALFORMED)
def test_malformed_annotations_name_file_and_row(tmp_path, synthetic, flag, split, content, message):
    bad = tmp_path / "annotations"
    bad.write_text(content)
    with pytest.raises(DataFileError, match=re.escape(str(bad)) + ": " + message):
        build_dataset(msrvtt_args(synthetic, **{flag: str(bad)}), split, RESOLUTION)


def test_malformed_lsmdc_line_is_named(tmp_path):
    (tmp_path / "LSMDC16_annos_val.csv").write_text("c1\t0\t1\t0\t1\tok\nc2\t0\t1\tbroken\n")
    args = data_args("--datatype", "lsmdc", "--data_path", str(tmp_path), "--features_path", str(tmp_path))
    with pytest.raises(DataFileError, match=r"LSMDC16_annos_val.csv: line 2: expected 6 tab-separated"):
        build_dataset(args, "val", RESOLUTION)


def test_missing_annotation_file_and_folder_name_the_flag(tmp_path, synthetic):
    with pytest.raises(DataFileError, match=r"nothing.csv: file not found \(set --train_csv\)"):
        build_dataset(msrvtt_args(synthetic, train_csv=str(tmp_path / "nothing.csv")), "train", RESOLUTION)
    with pytest.raises(DataFileError, match="set --features_path"):
        build_dataset(msrvtt_args(synthetic, features_path=str(tmp_path / "none")), "test", RESOLUTION)


@pytest.mark.parametrize("order", ["reversed", "shuffled"])
def test_eval_frame_order_permutes_the_real_frames_of_each_test_clip(synthetic, order):
    natural = build_dataset(msrvtt_args(synthetic, "--max_frames", "6"), "test", RESOLUTION).video_view()
    changed = build_dataset(msrvtt_args(synthetic, "--max_frames", "6", "--eval_frame_order", order), "test",
                            RESOLUTION).video_view()
    for index in range(3):
        a, b = natural[index], changed[index]
        real = int(a["video_mask"].sum())
        assert torch.equal(a["video_mask"], b["video_mask"]) and real > 2
        # every real frame is still there, once, and (reversed) in the opposite order
        matches = [[torch.equal(b["video"][i], a["video"][j]) for j in range(real)] for i in range(real)]
        assert all(sum(row) >= 1 for row in matches)
        if order == "reversed":
            assert torch.equal(b["video"][:real], a["video"][:real].flip(0))
        assert not torch.equal(b["video"][:real], a["video"][:real])
        assert torch.equal(changed[index]["video"], b["video"])  # the same permutation every time


def _training_item(dataset, index: int, seed: int = 3) -> dict:
    torch.manual_seed(seed)  # the training frame sampler draws at random: the same draw for every order
    return dataset[index]


@pytest.mark.parametrize("order,released", [("reversed", "1"), ("shuffled", "2")])
def test_train_frame_order_permutes_the_frames_of_training_items(synthetic, order, released):
    args = ("--max_frames", "6")
    natural = build_dataset(msrvtt_args(synthetic, *args, "--train_frame_order", "0"), "train", RESOLUTION)
    changed = build_dataset(msrvtt_args(synthetic, *args, "--train_frame_order", released), "train", RESOLUTION)
    assert natural.frame_order == "natural" and changed.frame_order == order  # the released numbers, as names
    a, b = _training_item(natural, 0), _training_item(changed, 0)
    real = int(a["video_mask"].sum())
    assert real > 2 and torch.equal(a["video_mask"], b["video_mask"]) and torch.equal(a["text"], b["text"])
    assert sorted(b["video"][:real].sum(dim=(1, 2, 3)).tolist()) == sorted(a["video"][:real].sum(dim=(1, 2, 3))
                                                                           .tolist())  # the same frames
    assert not torch.equal(b["video"][:real], a["video"][:real])
    if order == "reversed":
        assert torch.equal(b["video"][:real], a["video"][:real].flip(0))
    else:  # a new permutation per draw (under the same sampled frames: the seed of the draw decides)
        draws = {tuple(torch.argsort(_training_item(changed, 0, seed)["video"][:real].sum(dim=(1, 2, 3))).tolist())
                 for seed in range(3, 8)}
        assert len(draws) > 1
    # the evaluation order is its own flag: the test split keeps its natural order
    test = build_dataset(msrvtt_args(synthetic, *args, "--train_frame_order", released), "test", RESOLUTION)
    assert test.frame_order == "natural"


def test_reversed_frames_change_stops_video_features_and_leave_meanps_unchanged(synthetic):
    """Acceptance: --eval_frame_order 1 through the data path, encoded by a tiny STOP and a tiny meanP."""
    def videos(order):
        view = build_dataset(msrvtt_args(synthetic, "--max_frames", str(FRAMES), "--eval_frame_order", order),
                             "test", TINY.image_resolution).video_view()
        items = [view[i] for i in range(len(view))]
        return torch.stack([it["video"] for it in items]), torch.stack([it["video_mask"] for it in items])

    natural, reversed_ = videos("0"), videos("1")
    assert not torch.equal(natural[0], reversed_[0]) and torch.equal(natural[1], reversed_[1])
    with torch.no_grad():
        stop, meanp = tiny_model(max_frames=FRAMES), tiny_model(prompt="none")
        stop_change = (stop.encode_video(*natural) - stop.encode_video(*reversed_)).abs().amax(dim=1)
        torch.testing.assert_close(meanp.encode_video(*reversed_), meanp.encode_video(*natural), rtol=0, atol=1e-6)
    assert bool((stop_change > 1e-3).all())  # every video's STOP feature depends on the order


@pytest.mark.parametrize("value,name", [("0", "natural"), ("normal", "natural"), ("1", "reversed"),
                                        ("reverse", "reversed"), ("2", "shuffled"), ("random", "shuffled"),
                                        ("shuffled", "shuffled")])
def test_frame_order_flags_take_the_names_and_the_released_numbers(value, name):
    args = data_args("--train_frame_order", value, "--eval_frame_order", value)
    assert args.train_frame_order == name and args.eval_frame_order == name


def test_an_unknown_frame_order_names_the_flag():
    from main import main

    with pytest.raises(SystemExit, match=r"argument --train_frame_order: '3' is not a frame order: one of "
                                         r"\['natural', 'reversed', 'shuffled'\] or the released 0"):
        main(["--do_train", "--output_dir", "x", "--train_frame_order", "3"])
