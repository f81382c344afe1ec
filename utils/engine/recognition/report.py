"""What a recognition evaluation looks like: the confusion matrix as a PNG and per-class accuracy as JSON.

main.py writes both beside eval_results.json for the test evaluation of --task recognition:
``confusion_matrix_<split>.png`` (rows: the true class, normalised to 1; columns: the predicted class; class
names on the axes up to LABELLED_CLASSES classes), ``per_class_<split>.json`` (per class: its name, text,
video count, top-1 accuracy, and the class it is most often mistaken for) and ``predictions_<split>.json`` (per
scored video, in dataset order: {"video": its id, "label": its class, "predicted": the top-1 class}).
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import torch
from matplotlib.figure import Figure

from utils.atomic_file import write_atomic
from utils.engine.runtime.log import write_json

LABELLED_CLASSES = 40  # more classes than this: no names on the axes (they would not be legible)


def write_confusion_matrix(path: str | Path, confusion: torch.Tensor, class_names: List[str], title: str) -> None:
    """A PNG of the row-normalised confusion matrix [C, C] (true x predicted), written atomically."""
    num_classes = len(class_names)
    rows = confusion.double() / confusion.sum(dim=1, keepdim=True).clamp(min=1)
    side = min(16.0, 3.0 + 0.25 * num_classes)  # inches for the matrix; room for the class names around it
    fig = Figure(figsize=(side + 4.0, side + 2.5), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(rows.numpy(), cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, label="fraction of the true class", shrink=0.8)
    ax.set(xlabel="predicted class", ylabel="true class")
    fig.suptitle(title)
    if num_classes <= LABELLED_CLASSES:
        ax.set_xticks(range(num_classes), class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(num_classes), class_names, fontsize=7)
        if num_classes <= 15:
            for true in range(num_classes):
                for predicted in range(num_classes):
                    if confusion[true, predicted]:
                        ax.text(predicted, true, int(confusion[true, predicted]), ha="center", va="center",
                                fontsize=7, color="white" if rows[true, predicted] > 0.5 else "black")
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=90))


def per_class_report(confusion: torch.Tensor, class_names: List[str], class_texts: List[str]) -> List[dict]:
    """One entry per class: name, text, videos, top1 (None without videos), most_confused_with (None if none)."""
    report = []
    for index, (name, text) in enumerate(zip(class_names, class_texts)):
        row = confusion[index].clone()
        total, correct = int(row.sum()), int(row[index])
        row[index] = 0
        confused = int(row.argmax()) if int(row.max()) > 0 else None
        report.append({"class": name, "text": text, "videos": total,
                       "top1": 100.0 * correct / total if total else None,
                       "most_confused_with": class_names[confused] if confused is not None else None})
    return report


def write_recognition_report(output_dir: str | Path, split: str, confusion: torch.Tensor, class_names: List[str],
                             class_texts: List[str], video_ids: List[str], labels: torch.Tensor,
                             predicted: torch.Tensor) -> List[Path]:
    """confusion_matrix_<split>.png, per_class_<split>.json and predictions_<split>.json (video_ids [N], labels
    and predicted class indices int64 [N]) in ``output_dir``; returns their paths."""
    output_dir = Path(output_dir)
    png, report = output_dir / f"confusion_matrix_{split}.png", output_dir / f"per_class_{split}.json"
    predictions = output_dir / f"predictions_{split}.json"
    write_confusion_matrix(png, confusion, class_names, f"{split}: confusion matrix ({int(confusion.sum())} videos)")
    write_json(report, per_class_report(confusion, class_names, class_texts))
    write_json(predictions, [{"video": video, "label": class_names[true], "predicted": class_names[guess]}
                             for video, true, guess in zip(video_ids, labels.tolist(), predicted.tolist())])
    return [png, report, predictions]
