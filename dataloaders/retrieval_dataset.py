"""A text-video retrieval split as a torch Dataset, with the text and video views the evaluator encodes."""

from __future__ import annotations

import warnings

import torch
from torch.utils.data import Dataset

from models.tokenizer import tokenize

from .annotations import Annotations
from .sampling import DEFAULT_FRAME_SAMPLING, check_sampling
from .video_backends import check_backend
from .video_input import read_video_tensor
from .video_reader import VideoReadError

MAX_RESAMPLE_ATTEMPTS = 100
BAD_KINDS = ("missing", "empty", "unreadable", "truncated")  # VideoReadError.kind; code 1 + index in the flags


class BadVideoWarning(UserWarning):
    """A video was missing or unreadable and was skipped (training) or marked invalid (evaluation)."""


class BadVideoError(RuntimeError):
    """More videos of a split are missing or unreadable than --max_bad_video_fraction allows."""


# The order a clip's frames are given in (--train_frame_order, --eval_frame_order): the frame-order ablations.
FRAME_ORDERS = ("natural", "reversed", "shuffled")
# Other names of them: the released code's 0 / 1 / 2 (CLIP4Clip, DGL, STOP) and its words.
FRAME_ORDER_ALIASES = {"0": "natural", "normal": "natural", "1": "reversed", "reverse": "reversed",
                       "2": "shuffled", "random": "shuffled", "shuffle": "shuffled"}


def frame_order(value: str) -> str:
    """A frame order's name (FRAME_ORDERS, or an alias of FRAME_ORDER_ALIASES) -> its name in FRAME_ORDERS;
    ValueError for anything else."""
    name = FRAME_ORDER_ALIASES.get(value, value)
    if name not in FRAME_ORDERS:
        raise ValueError(f"{value!r} is not a frame order: one of {list(FRAME_ORDERS)} or the released 0 (natural), "
                         f"1 (reversed), 2 (shuffled)")
    return name


class RetrievalDataset(Dataset):
    """Captions and videos of one split.

    Items (training and evaluation alike; training samples frames at random, evaluation deterministically, with
    the `frame_sampling` rule of dataloaders/sampling.py, "release" by default): {"text": int64 [max_words],
    "video": float32 [max_frames, 3, R, R], "video_mask": int64 [max_frames] (1 = real frame), "video_index": int,
    "caption_index": int}. One item per caption, or with `train_unit == "video"` in training one per video with a
    random caption of it. The real frames come in
    `frame_order` (FRAME_ORDERS; `reorder_frames`): shuffled training items draw a new permutation each time,
    the evaluation views a fixed one per video.

    For evaluation: `video_ids`, `captions`, `caption_to_video` (int64 [num_captions]) and the views
    `text_view()` (every caption once) and `video_view()` (every video once, with "valid").

    Bad videos (missing, empty, undecodable, truncated) never become tensors of zeros in items: `__getitem__`
    warns (BadVideoWarning, naming the file), marks the video bad in a flag tensor shared with DataLoader workers
    and draws another item; in `video_view()` the item has valid=False. When the bad videos exceed
    `max_bad_fraction` of the split, BadVideoError stops the run.
    """

    def __init__(self, annotations: Annotations, source, *, max_frames: int, max_words: int, resolution: int,
                 train: bool, max_bad_fraction: float = 0.05, name: str = "dataset",
                 frame_sampling: str = DEFAULT_FRAME_SAMPLING, frame_order: str = "natural",
                 video_backend: str = "pyav"):
        if frame_order not in FRAME_ORDERS:
            raise ValueError(f"frame order {frame_order!r} is not one of {list(FRAME_ORDERS)}")
        self.name, self.frame_order = name, frame_order
        self.frame_sampling = check_sampling(frame_sampling)
        self.video_backend = check_backend(video_backend)
        self.video_ids = list(annotations.video_ids)
        self.captions = list(annotations.captions)
        self.caption_to_video = torch.tensor(annotations.caption_to_video, dtype=torch.long)
        self.source = source
        self.max_frames, self.max_words, self.resolution = max_frames, max_words, resolution
        self.train = train
        self.max_bad_fraction = max_bad_fraction
        self.per_video = train and annotations.train_unit == "video"
        self.captions_of_video: list[list[int]] = [[] for _ in self.video_ids]
        for caption_index, video_index in enumerate(annotations.caption_to_video):
            self.captions_of_video[video_index].append(caption_index)
        self.video_keys = [source.locate(video_id) for video_id in self.video_ids]
        # 0: not found bad; else 1 + the index of what is wrong with it in BAD_KINDS (shared with the workers)
        self._bad = torch.zeros(len(self.video_ids), dtype=torch.uint8).share_memory_()
        missing = [i for i, key in enumerate(self.video_keys) if key is None]
        if missing:
            self._bad[missing] = 1 + BAD_KINDS.index("missing")
            examples = ", ".join(self.video_ids[i] for i in missing[:5])
            warnings.warn(f"{name}: {len(missing)} of {len(self.video_ids)} videos not found in {source.location} "
                          f"(e.g. {examples})", BadVideoWarning, stacklevel=2)
            self._check_bad_fraction()

    def __len__(self) -> int:
        return len(self.video_ids) if self.per_video else len(self.captions)

    @property
    def bad_videos(self) -> dict[str, str]:
        """{video id: what is wrong with it (one of BAD_KINDS)} of the videos found missing or unreadable so far
        (by this process or any of its DataLoader workers), in split order."""
        return {self.video_ids[i]: BAD_KINDS[int(self._bad[i]) - 1]
                for i in torch.nonzero(self._bad).flatten().tolist()}

    @property
    def bad_video_ids(self) -> list[str]:
        """Ids of the videos found missing or unreadable so far (by any DataLoader worker)."""
        return list(self.bad_videos)

    def _check_bad_fraction(self) -> None:
        num_bad = int(torch.count_nonzero(self._bad))
        if num_bad > self.max_bad_fraction * len(self.video_ids):
            raise BadVideoError(
                f"{self.name}: {num_bad} of {len(self.video_ids)} videos are missing or unreadable, more than "
                f"--max_bad_video_fraction {self.max_bad_fraction} allows (first: {self.bad_video_ids[:5]}). "
                f"List them with `python -m preprocess.check_videos`, fix or drop them from the annotations, or "
                f"raise --max_bad_video_fraction.")

    def load_video(self, video_index: int, train: bool, num_frames: int | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(video [T, 3, R, R], mask [T]) or None for a bad video (warned about, flagged, counted); T is
        `num_frames`, by default max_frames."""
        if self._bad[video_index]:
            return None
        key = self.video_keys[video_index]
        try:
            return read_video_tensor(self.source.read(key), num_frames or self.max_frames, self.resolution, train,
                                     sampling=self.frame_sampling, backend=self.video_backend)
        except VideoReadError as error:
            self._bad[video_index] = 1 + BAD_KINDS.index(error.kind)
            warnings.warn(f"{self.name}: skipping video {self.source.describe(key)}: {error.reason} "
                          f"({int(torch.count_nonzero(self._bad))} of {len(self.video_ids)} videos bad so far)",
                          BadVideoWarning, stacklevel=2)
            self._check_bad_fraction()
            return None

    def tokenize(self, caption_index: int) -> torch.Tensor:
        """The caption as int64 [max_words] token ids."""
        return tokenize(self.captions[caption_index], self.max_words)[0]

    def _pair(self, index: int) -> tuple[int, int]:
        if self.per_video:
            choices = self.captions_of_video[index]
            return choices[int(torch.randint(len(choices), ()))], index
        return index, int(self.caption_to_video[index])

    def __getitem__(self, index: int) -> dict:
        for _ in range(MAX_RESAMPLE_ATTEMPTS):
            caption_index, video_index = self._pair(index)
            clip = self.load_video(video_index, self.train)
            if clip is not None:
                frames = reorder_frames(clip[0], clip[1], self.frame_order, None if self.train else video_index)
                return {"text": self.tokenize(caption_index), "video": frames, "video_mask": clip[1],
                        "video_index": video_index, "caption_index": caption_index}
            index = int(torch.randint(len(self), ()))
        raise BadVideoError(f"{self.name}: no readable video in {MAX_RESAMPLE_ATTEMPTS} random draws")

    def text_view(self) -> TextView:
        return TextView(self)

    def video_view(self) -> VideoView:
        return VideoView(self)


class TextView(Dataset):
    """Every caption once: {"text": int64 [max_words], "caption_index": int}."""

    def __init__(self, dataset: RetrievalDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset.captions)

    def __getitem__(self, caption_index: int) -> dict:
        return {"text": self.dataset.tokenize(caption_index), "caption_index": caption_index}


class VideoView(Dataset):
    """Every video once, frames sampled for evaluation: {"video": float32 [T, 3, R, R], "video_mask": int64 [T],
    "video_index": int, "valid": bool}. A bad video gives valid=False, a zero video and an all-ones mask (finite
    features the evaluator must drop, with the video's captions)."""

    def __init__(self, dataset: RetrievalDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset.video_ids)

    def __getitem__(self, video_index: int) -> dict:
        clip = self.dataset.load_video(video_index, train=False)
        valid = clip is not None
        if not valid:
            frames, size = self.dataset.max_frames, self.dataset.resolution
            clip = torch.zeros(frames, 3, size, size), torch.ones(frames, dtype=torch.long)
        frames = reorder_frames(clip[0], clip[1], self.dataset.frame_order, video_index) if valid else clip[0]
        return {"video": frames, "video_mask": clip[1], "video_index": video_index, "valid": valid}


def reorder_frames(frames: torch.Tensor, mask: torch.Tensor, order: str, seed: int | None) -> torch.Tensor:
    """The real frames (mask 1) of a clip [T, 3, R, R] in `order` (FRAME_ORDERS): as sampled, reversed, or
    shuffled by a permutation drawn from `seed` (evaluation: the video's index, the same on every run and
    process) or, for `seed` None (training), from torch's global RNG (a new permutation per draw, reproducible
    under utils.engine.training.data_order.SeededItems)."""
    if order == "natural":
        return frames
    real = int(mask.sum())
    if order == "reversed":
        permutation = torch.arange(real - 1, -1, -1)
    else:
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        permutation = torch.randperm(real, generator=generator)
    return torch.cat([frames[:real][permutation], frames[real:]])
