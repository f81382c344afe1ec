"""An action-recognition split as a torch Dataset: the retrieval dataset's videos (decoding, frame sampling,
frame order, bad-video policy: dataloaders/retrieval_dataset.py), each with its class, and the class texts."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from models.tokenizer import tokenize

from ..annotations import Annotations
from ..retrieval_dataset import RetrievalDataset, reorder_frames
from .labelled_videos import LabelledVideos


class RecognitionDataset(RetrievalDataset):
    """The videos of one split, one training item per video: the RetrievalDataset item (its "text" is the
    video's class text) plus "label" (int, the class index). `class_names`, `class_texts` (what each class is
    scored by) and `class_tokens()` (int64 [C, max_words]) cover every class of the dataset, also those without
    a video in this split; `labels` (int64 [N]) is the class of each video.

    `video_view()` (evaluation) gives each video as `views` clips (multi-view testing): {"video": float32
    [views, T, 3, R, R], "video_mask": int64 [views, T], "video_index", "valid", "label"}. View v of a video is
    frames v, v + views, v + 2 * views ... of one evaluation sampling of views * T frames, so the views are T
    frames each, spread over the whole video and shifted by a fraction of a segment from one another; one view
    is the usual evaluation clip. The other keyword arguments are RetrievalDataset's."""

    def __init__(self, videos: LabelledVideos, class_texts: list[str], source, *, views: int = 1, **options):
        if views < 1:
            raise ValueError(f"--test_views must be >= 1, got {views}")
        if len(class_texts) != len(videos.class_names):
            raise ValueError(f"{len(class_texts)} class texts for {len(videos.class_names)} classes")
        annotations = Annotations(videos.video_ids, [class_texts[label] for label in videos.labels],
                                  list(range(len(videos.video_ids))))
        super().__init__(annotations, source, **options)
        self.labels = torch.tensor(videos.labels, dtype=torch.long)
        self.class_names, self.class_texts, self.views = list(videos.class_names), list(class_texts), views

    def class_tokens(self) -> torch.Tensor:
        """Every class text as token ids, int64 [C, max_words]."""
        return tokenize(self.class_texts, self.max_words)

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        return {**item, "label": int(self.labels[item["video_index"]])}

    def video_view(self) -> MultiViewVideoView:
        return MultiViewVideoView(self)


class MultiViewVideoView(Dataset):
    """Every video once, as `dataset.views` evaluation clips (see RecognitionDataset). A bad video gives
    valid=False, zero clips and all-ones masks (finite scores the evaluator drops)."""

    def __init__(self, dataset: RecognitionDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset.video_ids)

    def __getitem__(self, video_index: int) -> dict:
        data, views = self.dataset, self.dataset.views
        clip = data.load_video(video_index, train=False, num_frames=data.max_frames * views)
        valid = clip is not None
        if valid:  # [views * T, ...] -> [views, T, ...]: view v takes frames v, v + views, ...
            frames = clip[0].unflatten(0, (data.max_frames, views)).transpose(0, 1)
            masks = clip[1].unflatten(0, (data.max_frames, views)).transpose(0, 1).clone()
            masks[masks.sum(1) == 0, 0] = 1  # a video shorter than `views` frames: its last frame, repeated
            frames = torch.stack([reorder_frames(f, m, data.frame_order, video_index) for f, m in zip(frames, masks)])
        else:
            frames = torch.zeros(views, data.max_frames, 3, data.resolution, data.resolution)
            masks = torch.ones(views, data.max_frames, dtype=torch.long)
        return {"video": frames, "video_mask": masks, "video_index": video_index, "valid": valid,
                "label": int(data.labels[video_index])}
