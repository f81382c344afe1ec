"""The dataset options the data and model-input flags give, the same for every task's dataset."""
from __future__ import annotations


def video_options(args, split: str, resolution: int) -> dict:
    """The keyword arguments of RetrievalDataset (and RecognitionDataset) the data and model-input flags give
    for `split`: frames of `resolution` px, --max_frames / --max_words (models.add_model_args), sampled by
    --frame_sampling (training at random, val and test deterministically), ordered by --train_frame_order /
    --eval_frame_order, decoded by --video_backend."""
    train = split == "train"
    return dict(max_frames=args.max_frames, max_words=args.max_words, resolution=resolution, train=train,
                max_bad_fraction=args.max_bad_video_fraction, name=f"{args.datatype} {split}",
                frame_sampling=args.frame_sampling,
                frame_order=args.train_frame_order if train else args.eval_frame_order,
                video_backend=args.video_backend)
