"""The in-process back-end: the same stages as the Ray back-end, run one after another in this process.

For debugging, notebooks and ``--in-process`` runs. Pseudo-labeling applies the Ray pipeline's own
stage (``InferLabelStage``, inference + labeling) to one shard file at a time, so the rows it writes —
error rows included — are the ones the Ray pipeline writes.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pyarrow.parquet as pq

from raytal.config import Config
from raytal.data.shards import list_shards
from raytal.selftrain.common import pseudolabel_callables
from raytal.selftrain.labeling import ICDContext
from raytal.selftrain.train_stage import train_local


class LocalBackend:
    def train(
        self, cfg: Config, stage_dir: Path, split_dir: Path, pseudo_dir: Path | None, init: str | None,
        num_classes: int, input_dim: int, *, prev_pseudo_dir: Path | None = None, stop_epoch: int | None = None,
    ) -> str:
        return train_local(cfg, stage_dir, split_dir, pseudo_dir, init, num_classes, input_dim,
                           prev_pseudo_dir=prev_pseudo_dir, stop_epoch=stop_epoch)

    def pseudolabel(
        self, cfg: Config, teacher: str, round_index: int, split_dir: Path, out_dir: Path, num_classes: int,
        icd: ICDContext | None,
    ) -> dict:
        from raytal.distributed.pseudolabel import (
            InferLabelStage, PipelineSummary, clean_output, check_shard_files, summarize_output,
        )
        start = time.perf_counter()
        make_infer, label_fn = pseudolabel_callables(cfg, teacher, num_classes, icd)
        clean_output(str(out_dir))
        good, videos_in, _, file_errors = check_shard_files([str(p) for p in list_shards(split_dir / "unlabeled")])
        stage = InferLabelStage(make_infer, None, max(1, cfg.train.torch_threads), label_video=label_fn,
                                round=round_index, teacher=teacher)
        for i, path in enumerate(good):
            table = pq.read_table(path)
            for lo in range(0, table.num_rows, cfg.ray.infer_batch_size):
                rows = stage(table.slice(lo, cfg.ray.infer_batch_size))
                pq.write_table(rows, Path(out_dir) / f"part-{i:05d}-{lo:07d}.parquet")
        rows, errors, reasons, per_class, relaxed = summarize_output(str(out_dir))
        return dataclasses.asdict(PipelineSummary(
            str(out_dir), videos_in, rows, errors, reasons, file_errors, per_class, relaxed, time.perf_counter() - start
        ))
