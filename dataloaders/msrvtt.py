"""MSR-VTT: CLIP4Clip's release files (train CSV of video ids, MSRVTT_data.json captions, JSFusion test CSV)."""

from __future__ import annotations

from .annotations import Annotations, check_caption, data_file, expect, read_csv, read_json


def _train_captions(json_path: str, video_ids: list[str]) -> dict[str, list[str]]:
    data = read_json(json_path)
    expect(isinstance(data, dict) and isinstance(data.get("sentences"), list), json_path, "top level",
           "expected an object with a 'sentences' list (CLIP4Clip's MSRVTT_data.json)")
    captions: dict[str, list[str]] = {video_id: [] for video_id in video_ids}
    for row, sentence in enumerate(data["sentences"]):
        expect(isinstance(sentence, dict) and isinstance(sentence.get("video_id"), str)
               and isinstance(sentence.get("caption"), str), json_path, f"sentences[{row}]",
               "needs string 'video_id' and 'caption'")
        video_id = sentence["video_id"]
        if video_id in captions:
            where = f"sentences[{row}] (caption {len(captions[video_id])} of video {video_id})"
            captions[video_id].append(check_caption(sentence["caption"], json_path, where))
    return captions


def load_annotations(args, split: str) -> Annotations:
    """train: videos of --train_csv with their captions in --data_path (MSRVTT_data.json), one item per video
    (a random caption each time) or, with --expand_msrvtt_sentences, one per caption. val: --val_csv;
    test: --test_csv, else --val_csv (JSFusion format `key,vid_key,video_id,sentence`, one caption per row)."""
    if split == "train":
        train_csv = data_file(args.train_csv, "--train_csv")
        video_ids = list(read_csv(train_csv, ["video_id"])["video_id"])
        json_path = data_file(args.data_path, "--data_path (MSRVTT_data.json)")
        captions = _train_captions(json_path, video_ids)
        for video_id, texts in captions.items():
            expect(bool(texts), json_path, "sentences", f"no caption of training video {video_id} "
                   f"(listed in {train_csv})")
        unit = "caption" if args.expand_msrvtt_sentences else "video"
        return Annotations.from_pairs(((v, c) for v, texts in captions.items() for c in texts), unit)
    path = args.val_csv if split == "val" else (args.test_csv or args.val_csv)
    table = read_csv(data_file(path, "--val_csv" if split == "val" else "--test_csv or --val_csv"),
                     ["video_id", "sentence"])
    return Annotations.from_pairs(zip(table["video_id"], table["sentence"]))
