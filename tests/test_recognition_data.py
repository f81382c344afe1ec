"""Action-recognition split files of every format (written here in their published layouts, small), class texts,
K-shot subsets, and the dataset's videos: class folders, missing files, multi-view clips."""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import pytest

from dataloaders import BadVideoError, BadVideoWarning, DataFileError, add_data_args
from dataloaders.recognition import add_recognition_args, build_recognition_dataset, load_labelled_videos
from dataloaders.recognition.class_text import class_texts, class_words
from dataloaders.recognition.labelled_videos import LabelledVideos
from models import add_model_args
from tests.data_fixtures import coded_frames, frame_index, write_lossless_video

CRLF = "\r\n"


def write_crlf(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(CRLF.join(lines).encode() + CRLF.encode())
    return path


def recognition_args(datatype: str, data_path: Path | None = None, *argv: str) -> argparse.Namespace:
    """The data, model-input and recognition flags, as main.py parses them."""
    parser = add_recognition_args(add_data_args(add_model_args(argparse.ArgumentParser())))
    return parser.parse_args(["--datatype", datatype, *(["--data_path", str(data_path)] if data_path else []), *argv])


# ------------------------------------------------------------------------------------------------- UCF101
UCF_CLASSES = ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]


def ucf_splits(root: Path, split: int = 1, train_extra=(), test_extra=()) -> Path:
    write_crlf(root / "classInd.txt", [f"{i + 1} {name}" for i, name in enumerate(UCF_CLASSES)])
    write_crlf(root / f"trainlist{split:02d}.txt",
               ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1", "YoYo/v_YoYo_g08_c02.avi 3",
                "HandstandPushups/v_HandStandPushups_g08_c01.avi 2", *train_extra])
    write_crlf(root / f"testlist{split:02d}.txt",
               ["YoYo/v_YoYo_g01_c01.avi", "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", *test_extra])
    return root


def test_ucf101_published_split_files(tmp_path):
    root = ucf_splits(tmp_path, split=2)
    train = load_labelled_videos(recognition_args("ucf101", root, "--split", "2"), "train")
    assert train.class_names == UCF_CLASSES
    assert train.video_ids == ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "YoYo/v_YoYo_g08_c02.avi",
                               "HandstandPushups/v_HandStandPushups_g08_c01.avi"]  # no "\r" left in the ids
    assert train.labels == [0, 2, 1]  # the 1-based indices of the file
    test = load_labelled_videos(recognition_args("ucf101", root, "--split", "2"), "test")
    assert test.labels == [2, 0] and test.class_names == UCF_CLASSES
    with pytest.raises(DataFileError, match=r"trainlist01\.txt: file not found"):
        load_labelled_videos(recognition_args("ucf101", root), "train")


@pytest.mark.parametrize("split, extra, message", [
    ("train", ["Juggling/v_Juggling_g01_c01.avi 3"], r"trainlist01\.txt: line 4: unknown class 'Juggling'"),
    ("test", ["Juggling/v_Juggling_g01_c01.avi"], r"testlist01\.txt: line 3: unknown class 'Juggling'"),
    ("train", ["YoYo/v_YoYo_g09_c01.avi 1"], r"trainlist01\.txt: line 4: class index 1 but the folder 'YoYo' is "
                                            r"class 3"),
    ("train", ["v_YoYo_g09_c01.avi 3"], r"trainlist01\.txt: line 4: expected 'Class/v_Class_gXX_cYY\.avi'"),
])
def test_ucf101_bad_lines_name_the_file_and_line(tmp_path, split, extra, message):
    root = ucf_splits(tmp_path, train_extra=extra if split == "train" else (),
                      test_extra=extra if split == "test" else ())
    with pytest.raises(DataFileError, match=message):
        load_labelled_videos(recognition_args("ucf101", root), split)


def test_ucf101_class_list_is_checked(tmp_path):
    write_crlf(tmp_path / "classInd.txt", ["1 ApplyEyeMakeup", "3 YoYo"])
    with pytest.raises(DataFileError, match=r"classInd\.txt: line 2: expected '2 <ClassName>'"):
        load_labelled_videos(recognition_args("ucf101", tmp_path), "train")


def test_ucf101_a_repeated_video_or_one_in_both_lists_of_a_split_is_refused(tmp_path):
    root = ucf_splits(tmp_path, train_extra=["YoYo/v_YoYo_g08_c02.avi 3"])
    with pytest.raises(DataFileError, match=r"trainlist01\.txt: line 4: YoYo/v_YoYo_g08_c02\.avi is listed again "
                                            r"\(first on line 2\)"):
        load_labelled_videos(recognition_args("ucf101", root), "train")
    root = ucf_splits(tmp_path, test_extra=["YoYo/v_YoYo_g08_c02.avi"])
    for split in ("train", "test"):
        with pytest.raises(DataFileError, match=r"list01\.txt: line \d: YoYo/v_YoYo_g08_c02\.avi is also in "
                                                r"\S+(test|train)list01\.txt \(line \d\): 1 video\(s\) are in both"):
            load_labelled_videos(recognition_args("ucf101", root), split)


# ------------------------------------------------------------------------------------------------- HMDB51
def hmdb_splits(root: Path, split: int = 1) -> Path:
    files = {"brush_hair": ["April_09_brush_hair_u_nm_np1_ba_goo_0.avi 1 ", "Brushing_hair_h_cm_np1_le_goo_1.avi 2 ",
                            "unused_brush_hair_0.avi 0 "],
             "cartwheel": ["Cartwheel_f_cm_np1_ri_med_2.avi 2 ", "(Rad)Schlag_cartwheel_f_cm_np1_le_med_0.avi 1 "]}
    for name, lines in files.items():
        write_crlf(root / f"{name}_test_split{split}.txt", lines)
    return root


def test_hmdb51_split_files(tmp_path):
    root = hmdb_splits(tmp_path, split=3)
    args = recognition_args("hmdb51", root, "--split", "3")
    train, test = load_labelled_videos(args, "train"), load_labelled_videos(args, "test")
    assert train.class_names == ["brush_hair", "cartwheel"]  # alphabetical
    assert train.video_ids == ["brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi",
                               "cartwheel/(Rad)Schlag_cartwheel_f_cm_np1_le_med_0.avi"]
    assert train.labels == [0, 1]
    assert test.video_ids == ["brush_hair/Brushing_hair_h_cm_np1_le_goo_1.avi",
                              "cartwheel/Cartwheel_f_cm_np1_ri_med_2.avi"] and test.labels == [0, 1]
    assert load_labelled_videos(args, "val").video_ids == test.video_ids  # no val split: the test split
    with pytest.raises(DataFileError, match=r"no \*_test_split1\.txt file"):
        load_labelled_videos(recognition_args("hmdb51", root), "train")


@pytest.mark.parametrize("second_id, lists", [("2", r"1 = training, this line 2 = test"),
                                              ("1", r"1 = training, this line 1 = training")])
def test_hmdb51_a_video_listed_twice_is_refused_naming_both_lists(tmp_path, second_id, lists):
    root = hmdb_splits(tmp_path)
    write_crlf(root / "cartwheel_test_split1.txt", ["a.avi 1", "b.avi 2", f"a.avi {second_id}"])
    for split in ("train", "test"):
        with pytest.raises(DataFileError, match=r"cartwheel_test_split1\.txt: line 3: a\.avi is listed again "
                                                rf"\(line 1 gives it {lists}\)"):
            load_labelled_videos(recognition_args("hmdb51", root), split)


def test_hmdb51_bad_split_id_names_file_and_line(tmp_path):
    root = hmdb_splits(tmp_path)
    write_crlf(root / "cartwheel_test_split1.txt", ["a.avi 1", "b.avi 3"])
    with pytest.raises(DataFileError, match=r"cartwheel_test_split1\.txt: line 2: expected '<video>\.avi <0\|1\|2>'"):
        load_labelled_videos(recognition_args("hmdb51", root), "train")


# --------------------------------------------------------------------------------------------- Kinetics-400
K400_HEADER = "label,youtube_id,time_start,time_end,split"


def test_kinetics400_csv_files(tmp_path):
    (tmp_path / "train.csv").write_text(f"{K400_HEADER}\nabseiling,--07WQ2iBlw,1,11,train\n"
                                        f'"passing American football (in game)",-0Dh-M3Bd-o,30,40,train\n'
                                        "abseiling,abc,100,110,train\n")
    (tmp_path / "validate.csv").write_text(f"{K400_HEADER}\nabseiling,xyz,5,15,val\n")
    args = recognition_args("kinetics400", tmp_path)
    train = load_labelled_videos(args, "train")
    assert train.class_names == ["abseiling", "passing American football (in game)"]
    assert train.video_ids == ["--07WQ2iBlw_000001_000011", "-0Dh-M3Bd-o_000030_000040", "abc_000100_000110"]
    assert train.labels == [0, 1, 0]
    test = load_labelled_videos(args, "test")  # no test.csv: validate.csv, with the training CSV's classes
    assert test.video_ids == ["xyz_000005_000015"] and test.class_names == train.class_names
    (tmp_path / "validate.csv").write_text(f"{K400_HEADER}\nabseiling,xyz,5,15,val\nyodelling,q,0,10,val\n")
    with pytest.raises(DataFileError, match=r"validate\.csv: line 3: unknown class 'yodelling'"):
        load_labelled_videos(args, "val")



@pytest.mark.parametrize("start, end, column", [("inf", "10", "time_start"), ("1", "nan", "time_end"),
                                                ("-5", "10", "time_start"), ("1", "1e400", "time_end"),
                                                ("ten", "20", "time_start"),
                                                ("12", "12", "columns time_start, time_end"),
                                                ("20", "10", "columns time_start, time_end")])
def test_kinetics400_a_time_that_is_not_a_clip_names_the_file_line_and_column(tmp_path, start, end, column):
    (tmp_path / "train.csv").write_text(f"{K400_HEADER}\nabseiling,a,1,11,train\nabseiling,b,{start},{end},train\n")
    with pytest.raises(DataFileError, match=rf"train\.csv: line 3, (column )?{column}: "):
        load_labelled_videos(recognition_args("kinetics400", tmp_path), "train")

def test_kinetics400_files_are_found_flat_or_in_class_folders(tmp_path):
    (tmp_path / "train.csv").write_text(f"{K400_HEADER}\nabseiling,flat,1,11,train\nabseiling,nested,2,12,train\n"
                                        "abseiling,absent,3,13,train\n")
    videos = tmp_path / "videos"
    (videos / "abseiling").mkdir(parents=True)
    write_lossless_video(videos / "flat_000001_000011.mp4", coded_frames(4))
    write_lossless_video(videos / "abseiling" / "nested_000002_000012.mp4", coded_frames(4))
    args = recognition_args("kinetics400", tmp_path, "--features_path", str(videos), "--max_frames", "2",
                            "--max_bad_video_fraction", "0.5")
    with pytest.warns(BadVideoWarning, match=r"1 of 3 videos not found .*absent_000003_000013"):
        dataset = build_recognition_dataset(args, "train", 32)
    assert dataset.video_keys[:2] == [str(videos / "flat_000001_000011.mp4"),
                                      str(videos / "abseiling" / "nested_000002_000012.mp4")]
    assert dataset.bad_video_ids == ["absent_000003_000013"]


# ------------------------------------------------------------------------------------- Something-Something v2
def ssv2_files(root: Path, validation_template: str = "Pushing [something] from left to right") -> Path:
    labels = {"Pushing something from left to right": "1", "Holding something next to something": "0"}
    (root / "labels.json").write_text(json.dumps(labels))
    train = [{"id": "78687", "label": "holding potato next to vicks vaporub bottle",
              "template": "Holding [something] next to [something]", "placeholders": ["potato", "bottle"]},
             {"id": "42326", "label": "pushing a pen from left to right",
              "template": "Pushing [something] from left to right", "placeholders": ["a pen"]}]
    (root / "something-something-v2-train.json").write_text(json.dumps(train))
    validation = [{"id": "1", "label": "x", "template": validation_template, "placeholders": ["x"]}]
    (root / "something-something-v2-validation.json").write_text(json.dumps(validation))
    return root


def test_ssv2_templates_are_the_classes(tmp_path):
    args = recognition_args("ssv2", ssv2_files(tmp_path))
    train = load_labelled_videos(args, "train")
    assert train.class_names == ["Holding something next to something", "Pushing something from left to right"]
    assert train.video_ids == ["78687", "42326"] and train.labels == [0, 1]
    assert class_texts(train.class_names, "{name}", train.class_texts) == train.class_names  # verbatim
    assert load_labelled_videos(args, "test").labels == [1]  # the validation set


def test_ssv2_unknown_template_names_the_entry(tmp_path):
    args = recognition_args("ssv2", ssv2_files(tmp_path, "Spinning [something]"))
    with pytest.raises(DataFileError, match=r"validation\.json: entry 0 \(id 1\): unknown class 'Spinning something'"):
        load_labelled_videos(args, "test")


# --------------------------------------------------------------------------------------------- custom CSV
def test_custom_csv_classes_from_the_training_csv_or_a_class_list(tmp_path):
    (tmp_path / "train.csv").write_text("path,label\na.mp4,walking\nb.mp4,RidingBike\nc.mp4,walking\n")
    (tmp_path / "test.csv").write_text("path,label\nd.mp4,walking\ne.mp4,jumping\n")
    args = recognition_args("csv", None, "--train_csv", str(tmp_path / "train.csv"),
                            "--val_csv", str(tmp_path / "test.csv"))
    train = load_labelled_videos(args, "train")
    assert train.class_names == ["RidingBike", "walking"] and train.labels == [1, 0, 1]
    with pytest.raises(DataFileError, match=r"test\.csv: line 3: unknown class 'jumping'"):
        load_labelled_videos(args, "test")
    (tmp_path / "classes.txt").write_text("walking\njumping\nRidingBike\n")
    args.class_list = str(tmp_path / "classes.txt")
    assert load_labelled_videos(args, "test").labels == [0, 1]
    assert load_labelled_videos(args, "train").class_names == ["walking", "jumping", "RidingBike"]


# ------------------------------------------------------------------------------------------- class texts
@pytest.mark.parametrize("name, words", [("ApplyEyeMakeup", "apply eye makeup"), ("YoYo", "yo yo"),
                                         ("brush_hair", "brush hair"), ("UFOLanding", "ufo landing"),
                                         ("playing bass guitar", "playing bass guitar"),
                                         ("Skijet", "skijet"), ("fall_floor", "fall floor")])
def test_class_names_become_words(name, words):
    assert class_words(name) == words


def test_class_template():
    assert class_texts(["ApplyEyeMakeup"], "a video of a person {name}") == ["a video of a person apply eye makeup"]
    with pytest.raises(ValueError, match="--class_template .* must contain {name}"):
        class_texts(["x"], "a video of a person")


# ------------------------------------------------------------------------------------------ K-shot subsets
def test_k_shot_takes_k_videos_of_every_class_by_seed():
    videos = LabelledVideos([f"v{i}" for i in range(30)], [i % 3 for i in range(30)], ["a", "b", "c"])
    two = videos.k_shot(2, seed=0)
    assert sorted(two.labels) == [0, 0, 1, 1, 2, 2]
    assert set(two.video_ids) <= set(videos.video_ids)
    assert two.video_ids == videos.k_shot(2, seed=0).video_ids  # a fixed function of the seed
    assert any(videos.k_shot(2, seed=s).video_ids != two.video_ids for s in range(1, 4))
    assert set(two.video_ids) <= set(videos.k_shot(2, seed=0).video_ids)
    with pytest.raises(ValueError, match="--shots 11: 3 classes have fewer training videos"):
        videos.k_shot(11, seed=0)


def test_shots_and_holdout_through_the_flags(tmp_path):
    (tmp_path / "train.csv").write_text("path,label\n" + "".join(f"v{i}.mp4,{'ab'[i % 2]}\n" for i in range(10)))
    args = recognition_args("csv", None, "--train_csv", str(tmp_path / "train.csv"), "--shots", "2",
                            "--holdout_val_videos", "4")
    val, train = load_labelled_videos(args, "val"), load_labelled_videos(args, "train")
    assert len(val.video_ids) == 4 and sorted(train.labels) == [0, 0, 1, 1]
    assert not set(val.video_ids) & set(train.video_ids)


# ------------------------------------------------------------------------------------------ multi-view clips
def test_multi_view_clips_are_interleaved_evaluation_frames(tmp_path):
    write_lossless_video(tmp_path / "clip.mp4", coded_frames(16))
    (tmp_path / "test.csv").write_text("path,label\nclip.mp4,walking\n")
    args = recognition_args("csv", None, "--val_csv", str(tmp_path / "test.csv"), "--features_path", str(tmp_path),
                            "--max_frames", "2", "--test_views", "2")
    item = build_recognition_dataset(args, "test", 32).video_view()[0]
    assert item["video"].shape == (2, 2, 3, 32, 32) and item["video_mask"].tolist() == [[1, 1], [1, 1]]
    # 4 evaluation frames of 16 (tick 4): 2, 6, 10, 14; view 0 takes 2 and 10, view 1 takes 6 and 14
    decoded = (item["video"][:, :, 0] * 0.26862954 + 0.48145466) * 255  # undo CLIP's normalisation (red)
    indices = [[frame_index(decoded[v, t, ..., None].numpy()) for t in range(2)] for v in range(2)]
    assert indices == [[2, 10], [6, 14]]
    assert item["label"] == 0 and item["valid"]


def test_a_missing_video_is_an_invalid_view_not_zeros_in_training(tmp_path):
    write_lossless_video(tmp_path / "a.mp4", coded_frames(4))
    (tmp_path / "train.csv").write_text("path,label\na.mp4,walking\nmissing.mp4,running\n")
    args = recognition_args("csv", None, "--train_csv", str(tmp_path / "train.csv"), "--val_csv",
                            str(tmp_path / "train.csv"), "--features_path", str(tmp_path), "--max_frames", "2",
                            "--max_bad_video_fraction", "0.5")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadVideoWarning)
        train, test = build_recognition_dataset(args, "train", 32), build_recognition_dataset(args, "test", 32)
    assert all(train[1]["video_index"] == 0 for _ in range(3))  # the missing video is never a training item
    assert [test.video_view()[i]["valid"] for i in range(2)] == [True, False]
    args.max_bad_video_fraction = 0.1
    with pytest.raises(BadVideoError, match=r"1 of 2 videos are missing or unreadable"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BadVideoWarning)
            build_recognition_dataset(args, "test", 32)
