"""scripts/demo/temporal_benchmark.py on a toy setting: the learning rate is chosen on val and recorded, test is
scored once per chosen run, the rows agree with the saved similarity matrices, the reversed-frames control of a
clip-reversal pair is the natural evaluation with the pair's videos swapped, and a second invocation reads
finished runs instead of repeating them."""
import json

import matplotlib.image
import torch

from scripts.demo import benchmark_report, demo_report, temporal_benchmark
from utils.engine.retrieval.pair_metrics import pair_scores

TOY = ["--seeds", "0", "--tasks", "direction", "which_moves", "--train_pairs", "4", "--val_pairs", "2",
       "--test_pairs", "3", "--epochs", "1", "--batch_size", "4", "--clip_steps", "5", "--clip_images", "16",
       "--probe_pairs", "8", "4", "10", "--lrs", "1e-3", "3e-3"]


def test_benchmark_chooses_on_val_scores_test_once_and_resumes(tmp_path):
    out = tmp_path / "bench"
    argv = ["--output", str(out), "--clip_cache", str(tmp_path / "clips"), "--methods", "meanp", "paper",
            "--controls", "paper_test_reversed", *TOY]
    result = temporal_benchmark.main(argv)
    seed = out / "seed0"
    pairs = json.loads((seed / "data" / "pairs.json").read_text())
    # every trained lr was scored on val only; the chosen one is the best mean val group score
    (choice,) = result["chosen_lr"]
    by_lr = choice["val_mean_group_score_by_lr"]
    assert set(by_lr) == {"0.001", "0.003"} and by_lr[f"{choice['lr']:g}"] == max(by_lr.values())
    for lr in ("0.001", "0.003"):
        hparams = json.loads((seed / f"paper_lr{lr}" / "hparams.json").read_text())
        assert hparams["test_csv"].endswith("MSRVTT_val.csv") and hparams["train_group_size"] == 2
    tested = sorted(p.name for p in (seed / "test").iterdir() if p.is_dir())
    assert tested == ["meanp", "paper", "paper_test_reversed"]  # the test split: once per chosen run and control
    init = json.loads((seed / "test" / "paper" / "hparams.json").read_text())["init_model"]
    assert init.endswith(f"paper_lr{choice['lr']:g}")
    # the rows are the pair scores of the saved test similarities
    test_pairs = [p for p in pairs if p["split"] == "test"]
    saved = torch.load(seed / "test" / "paper" / "similarity_test.pt", weights_only=True)
    expected = pair_scores(saved["similarity"], saved["caption_to_video"], saved["video_ids"], test_pairs)
    rows = {(r["method"], r["task"]): r for r in result["rows"]}
    assert rows["paper", "direction"]["group_score"] == expected["direction"]["group_score"]
    assert rows["paper", "which_moves"]["text_score_ci95"] == expected["which_moves"]["text_score_ci95"]
    assert rows["paper", "direction"]["steps"] == 4 and rows["meanp", "direction"]["steps"] == 0
    # reversing a direction clip's frames gives its pair's other video: the columns swap exactly
    reversed_ = torch.load(seed / "test" / "paper_test_reversed" / "similarity_test.pt", weights_only=True)
    column = {v: i for i, v in enumerate(saved["video_ids"])}
    for pair in (p for p in test_pairs if p["task"] == "direction"):
        a, b = (column[v] for v in pair["videos"])
        torch.testing.assert_close(reversed_["similarity"][:, a], saved["similarity"][:, b], atol=1e-5, rtol=0)
    assert {p["task"] for p in result["probes"]} == {"direction", "which_moves"}
    assert {m["method"] for m in result["mechanism"]} == {"paper"}
    assert "| STOP (paper) |" in (out / "summary.md").read_text()
    assert matplotlib.image.imread(out / "summary.png").shape[2] == 4
    trained = (seed / f"paper_lr{choice['lr']:g}" / "ckpt_last.pt").stat().st_mtime_ns
    again = temporal_benchmark.main(argv)
    assert (seed / f"paper_lr{choice['lr']:g}" / "ckpt_last.pt").stat().st_mtime_ns == trained  # not retrained
    assert again["rows"] == result["rows"]
    # --update_probes re-runs only the probes, at the new size, and keeps the rows
    updated = temporal_benchmark.main([*argv, "--update_probes", "--probe_pairs", "8", "4", "12"])
    assert {p["test_pairs"] for p in updated["probes"]} == {12} and updated["rows"] == result["rows"]
    assert updated["protocol"]["probes"]["pairs"] == [8, 4, 12]
    assert json.loads((out / "temporal_benchmark.json").read_text())["probes"] == updated["probes"]
    assert "scored on 12 test pairs per task" in (out / "summary.md").read_text()
    # the tables go into a markdown file between its markers, figure links relative to that file
    md = tmp_path / "docs" / "RESULTS.md"
    md.parent.mkdir()
    md.write_text(f"intro\n{benchmark_report.BEGIN}\nold\n{benchmark_report.END}\nrest\n")
    benchmark_report.main([str(out / "temporal_benchmark.json"), "--results_md", str(md)])
    text = md.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{benchmark_report.END}\nrest\n") and "old" not in text
    assert "](../bench/summary.png)" in text and "| STOP (paper) |" in text


def test_every_row_and_test_folder_has_its_own_name():
    """A control named like a method would read that method's evaluation as its own."""
    assert not set(temporal_benchmark.METHODS) & set(temporal_benchmark.CONTROLS)
    assert all("_test_" not in method for method in temporal_benchmark.METHODS)


def test_the_demo_report_names_where_the_demo_and_the_full_benchmark_disagree(tmp_path):
    """A method separates the pairs when its group score's interval lies above chance; the report counts the cells
    where the demo and the full benchmark's run of the same seed say otherwise, and names them."""
    def row(method, task, lo, seed=3):
        return {"task": task, "method": method, "label": method.upper(), "seed": seed, "group_score": lo + 5,
                "group_score_ci95": [lo, lo + 10]}
    demo = tmp_path / "demo"
    demo.mkdir()
    probes = [{"view": "frame 0", "test_accuracy_ci95": [48.0, 52.5]}]
    (demo / "temporal_benchmark.json").write_text(json.dumps({
        "rows": [row("paper", "which_moves", 20.0), row("meanp", "which_moves", 0.0), row("dgl", "direction", 0.0)],
        "probes": probes, "protocol": {"args": {"seeds": [3], "methods": ["meanp", "dgl", "paper"], "controls": []},
                                       "seconds": 280.2,
                                       "machine": {"cpu": "CPU", "logical_cpus": 2, "load_at_start": [0.5, 1, 2]}}}))
    full = {"rows": [row("paper", "which_moves", 10.0), row("meanp", "which_moves", 0.0),
                     row("dgl", "direction", 17.0), row("paper", "which_moves", 30.0, seed=4)]}
    text, disagreements = demo_report.demo_text([demo], full)
    assert disagreements == ["which_moves / PAPER / seed 3", "direction / DGL / seed 3"]
    assert "agree on whether a method separates the pairs in 1 of 3" in text
    assert "| 3 | " in text and "| 280 |" in text and "| 52.5 |" in text
    assert "| PAPER | 25.0 [20, 30] **yes** | 15.0 [10, 20] |" in text
