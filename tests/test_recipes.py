"""Every semi-supervised recipe runs one self-training round end to end in-process (issue 6).

For each recipe config the round must: write one pseudo-label row per unlabeled video, train the student
with the recipe's own loss terms (they appear, finite, in its last epoch's metrics) and change its
predictions relative to the teacher's. A short schedule keeps each recipe to a few seconds.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from raytal.config import load_config
from raytal.data.dataset import load_dataset
from raytal.data.pseudo_io import read_pseudo_labels
from raytal.model.inference import predict_videos
from raytal.selftrain.common import load_detector
from raytal.selftrain.local import LocalBackend
from raytal.selftrain.rounds import run_selftrain
from raytal.engine.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]

# recipe config -> loss terms the student's objective must report (besides the detection terms)
RECIPES = {
    "npl": {"consistency"},
    "apl": {"locq_s", "acp"},
    "ntc": {"ntc"},
    "apl_ntc": {"locq_s", "acp", "ntc"},
    "npl_ntc": {"consistency", "ntc"},
    "gaufuse": {"snippet"},
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_round_runs_and_changes_the_student(recipe: str, tiny_data: Path, tmp_path: Path):
    torch.set_num_threads(1)
    cfg = load_config(
        ROOT / "configs" / f"tiny_{recipe}.yaml",
        [f"data.root={tiny_data}", f"run.dir={tmp_path / 'run'}", "train.epochs=4", "train.warmup_epochs=1",
         "train.lr=0.005", "recipe.apl.icd_steps=30", "recipe.apl.acp_parts=8"],
    )
    metrics = run_selftrain(cfg, LocalBackend())
    run = tmp_path / "run"

    ds = load_dataset(cfg.data)
    rows = read_pseudo_labels(run / "round_1" / "pseudo")
    assert sorted(rows) == sorted(v.video_id for v in ds.unlabeled)  # one row per unlabeled video
    assert all(r.error is None for r in rows.values())

    student = load_checkpoint(run / "round_1" / "train" / "final.pt")
    terms = student["metrics"]
    missing = RECIPES[recipe] - set(terms)
    assert not missing, f"{recipe}: the student's objective lacks {missing} (has {sorted(terms)})"
    assert all(math.isfinite(terms[k]) for k in RECIPES[recipe])

    teacher_preds = predict_videos(load_detector(cfg, run / "round_0" / "train" / "final.pt"), ds.test[:4], cfg.infer)
    student_preds = predict_videos(load_detector(cfg, run / "round_1" / "train" / "final.pt"), ds.test[:4], cfg.infer)
    changed = any(
        a["scores"].shape != b["scores"].shape or not np.allclose(a["scores"], b["scores"])
        for a, b in zip(teacher_preds, student_preds)
    )
    assert changed, f"{recipe}: the student predicts exactly what the teacher does"
    assert len(metrics["rounds"]) == 2 and "quality" in metrics["rounds"][1]
