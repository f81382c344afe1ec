"""Recognition metrics against hand computations, the cross-entropy over class logits (its two-process gradient:
tests/test_ddp.py), the per-class report."""
from __future__ import annotations

import pytest
import torch

from models.loss import ClassificationLoss, class_logits
from utils.engine.recognition.metrics import recognition_metrics
from utils.engine.recognition.report import per_class_report

# 5 videos x 6 classes; labels 0, 1, 1, 2, 5 (classes 3 and 4 have no video)
SCORES = torch.tensor([[0.9, 0.1, 0.0, 0.0, 0.0, 0.0],    # class 0: top-1 hit
                       [0.5, 0.4, 0.3, 0.2, 0.1, 0.0],    # class 1: rank 2
                       [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],    # class 1: all tied -> class 0 first, class 1 rank 2
                       [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],    # class 2: rank 3
                       [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]])   # class 5: rank 6 (outside the top 5)
LABELS = torch.tensor([0, 1, 1, 2, 5])


def test_metrics_match_a_hand_computation():
    metrics = recognition_metrics(SCORES, LABELS)
    assert metrics["top1"] == pytest.approx(100 * 1 / 5)
    assert metrics["top5"] == pytest.approx(100 * 4 / 5)
    # per class: 0 -> 1/1, 1 -> 0/2, 2 -> 0/1, 5 -> 0/1; classes 3 and 4 have no video and do not count
    assert metrics["mean_class_accuracy"] == pytest.approx(100 * (1 + 0 + 0 + 0) / 4)
    assert metrics["per_class_accuracy"] == [100.0, 0.0, 0.0, None, None, 0.0]
    assert metrics["count"] == 5
    expected = torch.zeros(6, 6, dtype=torch.long)
    for true, predicted in [(0, 0), (1, 0), (1, 0), (2, 0), (5, 0)]:
        expected[true, predicted] += 1
    assert torch.equal(metrics["confusion"], expected)


def test_videos_tied_with_their_class_are_counted():
    assert recognition_metrics(SCORES, LABELS)["tied"] == 1  # the all-zero row
    identical = recognition_metrics(torch.zeros(4, 3), torch.tensor([0, 0, 0, 0]))  # every class scores alike
    assert identical["top1"] == 100.0 and identical["tied"] == 4  # the index order decides: flagged
    assert recognition_metrics(torch.eye(3), torch.arange(3))["tied"] == 0


def test_mean_class_accuracy_weighs_classes_not_videos():
    scores = torch.eye(3)[[0, 0, 0, 1, 2]]  # three videos of class 0 right, one of class 1 wrong
    metrics = recognition_metrics(scores, torch.tensor([0, 0, 0, 2, 1]))
    assert metrics["top1"] == pytest.approx(60.0)
    assert metrics["mean_class_accuracy"] == pytest.approx(100 / 3)
    assert metrics["top5"] == 100.0  # fewer than 5 classes: every class is in the top 5


def test_metric_inputs_are_checked():
    with pytest.raises(ValueError, match="no video"):
        recognition_metrics(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match=r"scores must be \[N, C\]"):
        recognition_metrics(torch.zeros(4, 3), torch.zeros(3, dtype=torch.long))


def test_per_class_report():
    confusion = torch.tensor([[2, 1, 0], [0, 0, 0], [3, 0, 1]])
    report = per_class_report(confusion, ["a", "b", "c"], ["text a", "text b", "text c"])
    assert report[0] == {"class": "a", "text": "text a", "videos": 3, "top1": pytest.approx(200 / 3),
                         "most_confused_with": "b"}
    assert report[1]["top1"] is None and report[1]["most_confused_with"] is None
    assert report[2]["most_confused_with"] == "a"


def test_cross_entropy_over_class_logits_by_hand():
    g = torch.Generator().manual_seed(0)
    video, classes, labels = torch.randn(4, 8, generator=g), torch.randn(3, 8, generator=g), torch.tensor([0, 2, 1, 2])
    scale = torch.tensor(20.0)
    logits = class_logits(video, classes, scale)
    by_hand = scale * (video / video.norm(dim=1, keepdim=True)) @ (classes / classes.norm(dim=1, keepdim=True)).t()
    assert torch.allclose(logits, by_hand, atol=1e-5)
    expected = -torch.log_softmax(by_hand, dim=1)[torch.arange(4), labels].mean()
    assert torch.allclose(ClassificationLoss()(video, classes, scale, labels), expected, atol=1e-5)
    with pytest.raises(ValueError, match="4 videos and 3 labels"):
        ClassificationLoss()(video, classes, scale, labels[:3])
