"""Every semi-supervised recipe runs one self-training round end to end in-process (issue 6).

For each recipe config the round must: write one pseudo-label row per video of the run's pseudo sources
(the split's unlabeled part, plus the dataset's pool if any), train the student with the recipe's own loss
terms (they appear, finite, in its last epoch's metrics) and change its predictions relative to the
teacher's. A short schedule keeps each recipe to a few seconds.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from raytal.config import load_config
from raytal.data.index import RunIndex, source_videos
from raytal.data.pseudo_io import read_pseudo_labels
from raytal.engine.checkpoint import load_checkpoint
from raytal.selftrain.local import LocalBackend
from raytal.selftrain.rounds import run_selftrain
from raytal.selftrain.teacher import Predictor

ROOT = Path(__file__).resolve().parents[1]

# recipe config -> loss terms the student's objective must report (besides the detection terms)
RECIPES = {
    "npl": {"consistency"},
    "apl": {"locq_s", "locq_u", "acp"},
    "ntc": {"ntc"},
    "apl_ntc": {"locq_s", "locq_u", "acp", "ntc"},
    "npl_ntc": {"consistency", "ntc"},
    "gaufuse": {"snippet"},
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_round_runs_and_changes_the_student(recipe: str, tiny_data: Path, tmp_path: Path):
    torch.set_num_threads(1)
    cfg = load_config(
        ROOT / "configs" / f"tiny_{recipe}.yaml",
        [f"data.root={tiny_data}", f"run.dir={tmp_path / 'run'}", "train.epochs=4", "train.warmup_epochs=1",
         "train.lr=0.005", "recipe.apl.icd_steps=30", "recipe.apl.acp_parts=8", "recipe.apl.acp_pretrain_epochs=1"],
    )
    metrics = run_selftrain(cfg, LocalBackend())
    run = tmp_path / "run"

    index = RunIndex.load(str(run / "index.json"))
    rows = read_pseudo_labels(run / "round_1" / "pseudo")
    pseudo_ids = [v.video_id for part, src in index.pseudo_sources() for v in source_videos(src, part, index.setting)]
    assert index.count("unlabeled") > 0 and sorted(rows) == sorted(pseudo_ids)  # one row per video
    assert all(r.error is None for r in rows.values())
    # APL pre-trains with ACP on every training video before its teacher; no other recipe does
    stages = json.loads((run / "stages.json").read_text())["stages"]
    assert ("round_0/pretrain" in stages) == recipe.startswith("apl")

    student = load_checkpoint(run / "round_1" / "train" / "final.pt")
    terms = student["metrics"]
    missing = RECIPES[recipe] - set(terms)
    assert not missing, f"{recipe}: the student's objective lacks {missing} (has {sorted(terms)})"
    assert all(math.isfinite(terms[k]) for k in RECIPES[recipe])

    test = list(itertools.islice(index.videos("test"), 4))
    teacher_preds = Predictor(cfg, str(run / "round_0" / "train" / "final.pt"))(test)
    student_preds = Predictor(cfg, str(run / "round_1" / "train" / "final.pt"))(test)
    changed = any(
        a["scores"].shape != b["scores"].shape or not np.allclose(a["scores"], b["scores"])
        for a, b in zip(teacher_preds, student_preds)
    )
    assert changed, f"{recipe}: the student predicts exactly what the teacher does"
    assert len(metrics["rounds"]) == 2 and "quality" in metrics["rounds"][1]
