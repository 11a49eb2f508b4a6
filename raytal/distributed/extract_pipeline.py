"""Ray Data feature-extraction pipeline: video files -> decode tasks (CPU) -> backbone actor pool (GPU or CPU)
-> the driver, which assembles each video's features and writes them batch by batch.

    units of videos (from_items) -> decode_units in ``decode_tasks`` concurrent tasks, each streaming chunks of
    window clips (a long video never held whole) -> EmbedStage in ``model_actors`` actors, ``clips_per_batch``
    clips per call from any videos -> iter_batches on the driver -> Assembler -> sink (the output's batches)

The stages are Ray-free (``raytal.video.stages``), so the in-process back-end computes the same features. Only
features (D floats per window) reach the driver, a small fraction of the decoded frames; Ray Data's streaming
executor bounds the clips in flight, so memory does not grow with the number or length of the videos.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import ray
import ray.data

from raytal.video.backbones import BackboneSpec
from raytal.video.decode import ClipSpec
from raytal.video.rows import decode_units
from raytal.video.sources import VideoFile
from raytal.video.stages import Assembler, EmbedStage, Extracted

# Read blocks: one per unit of videos. A unit is one video while the list is short (the best balance over the
# decode tasks); past this many units, several videos share one, so Ray Data's bookkeeping per block stays
# bounded for a list of millions.
MAX_UNITS = 10_000


def run_extract_pipeline(videos: list[VideoFile], spec: ClipSpec, sink: Callable[[int, Extracted], None], *,
                         backbone: BackboneSpec, decode_tasks: int = 2, model_actors: int = 1,
                         clips_per_batch: int = 16, actor_cpus: float = 1.0, decode_cpus: float = 0.5,
                         use_gpu: bool = False) -> None:
    """Every video of ``videos`` to ``sink(key, outcome)`` once (key = its position); Ray must be running."""
    if min(decode_tasks, model_actors, clips_per_batch) < 1:
        raise ValueError(f"decode_tasks, model_actors and clips_per_batch must be >= 1, got {decode_tasks}, "
                         f"{model_actors}, {clips_per_batch}")
    if not ray.is_initialized():
        raise RuntimeError("the extraction pipeline needs Ray running: call raytal.distributed.session.ensure_ray")
    per_unit = max(1, math.ceil(len(videos) / MAX_UNITS))
    units = [{"videos": [{"key": k, "video": dataclasses.asdict(videos[k])}
                         for k in range(i, min(i + per_unit, len(videos)))]}
             for i in range(0, len(videos), per_unit)]
    ds = ray.data.from_items(units, override_num_blocks=len(units))
    # decode_units lives in a module without torch: a decode task's worker never imports it
    ds = ds.map_batches(decode_units, fn_kwargs={"spec": spec}, batch_size=1, batch_format="pyarrow",
                        compute=ray.data.TaskPoolStrategy(size=decode_tasks), num_cpus=decode_cpus)
    clip = (spec.num_frames, *spec.crop)
    ds = ds.map_batches(
        EmbedStage,
        fn_constructor_kwargs={"backbone": backbone, "clip": clip, "torch_threads": max(1, int(actor_cpus)),
                               "device": "cuda" if use_gpu else "cpu"},
        batch_size=clips_per_batch, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=model_actors), num_cpus=actor_cpus, num_gpus=1 if use_gpu else 0)
    assembler = Assembler(videos, spec)
    for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        for key, done in assembler.add(table):
            sink(key, done)
