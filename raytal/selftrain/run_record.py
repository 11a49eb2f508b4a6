"""What makes a run directory one run: the config and the data it was made from, recorded before its first
stage and checked every time it resumes.

Record: ``<run>/config.yaml`` (the config) and ``<run>/run.json`` (a fingerprint of the dataset the run is
split from: the sha256 of ``data.root/dataset.yaml`` and, for every shard file of the subsets it reads (its
training and test subsets and the pool), its size, modification time and the sha256 of its bytes). The
content hash comes from the dataset's manifest (``jobs/make_dataset.py`` computes it while writing each
shard, so it costs nothing; ``raytal.core.outputs``), and is computed by reading the file only for a shard
the manifest does not list (a dataset made another way). On resume a shard whose size and modification time
are the recorded ones is taken as unchanged without being read: every write of a file sets its
modification time, so changed bytes with an unchanged time take a deliberate reset of the clock. A shard
whose time differs is read and hashed again (a re-converted dataset is read once, and refused when any
byte differs, even with every shard the same size); a shard whose time alone changed (a copy, a
``touch``) is accepted and its new time recorded. A run directory holds one run: re-running in a
directory that has a record compares, before anything is written,

- the config: every key must be the recorded value except ``RESUMABLE_KEYS``, which say how or where the
  run goes on but not what it computes: ``run.rounds`` (raising it continues the run with more rounds;
  lowering it reports the earlier rounds), ``run.patience`` (how many rounds without a better val mAP end
  the run), ``run.dir`` (the directory moved), ``train.torch_threads``, every
  ``ray.*`` key (cluster, workers, GPUs, actor pool and batch sizes: a run may resume on another cluster;
  with another ``ray.num_workers`` the stages still to train see other batches, as any DDP run does) and
  every ``tune.*`` key (a sweep's, not a run's). Any other difference is an error naming the keys, old and
  new values: the finished stages were computed with the recorded values, and their results would be
  filed under the new ones. ``config.yaml`` is rewritten only after the check passes.
- the data: a different ``dataset.yaml`` or shard listing is an error naming what changed (the run's
  ``index.json`` points into those shards and its finished stages were computed from them).

To run another config, give it another ``run.dir``; a finished teacher can be shared with the new run by
``run.teacher=<old run>/round_0/train/final.pt`` when the changed keys cannot change round 0 (what Tune does
for its trials). A state file that cannot be read (``config.yaml``, ``run.json``) is an error naming it and
saying what to do; ``stages.json`` is checked by its reader (``raytal.selftrain.ledger``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time

from raytal.config import Config, ConfigError, DataConfig, from_dict, leaves, read_yaml_mapping, save_config, to_dict
from raytal.core import storage
from raytal.core.errors import RunStateError, clip
from raytal.core.jsonfile import read_json
from raytal.core.outputs import read_manifest
from raytal.data.dataset import DatasetInfo, resolve

log = logging.getLogger("raytal.selftrain")

RESUMABLE_KEYS = ("run.rounds", "run.patience", "run.dir", "train.torch_threads", "ray.", "tune.")
RECORD_NAME = "run.json"
MAX_RECORD_BYTES = 64 << 20
_SHOWN_CHANGES = 8


def resumable(key: str) -> bool:
    """Whether config key ``key`` may differ from the recorded one when a run resumes (module docstring)."""
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUMABLE_KEYS)


def config_changes(recorded: Config, now: Config) -> list[str]:
    """``"'key' was OLD, now NEW"`` for every key outside ``RESUMABLE_KEYS`` whose value differs."""
    old = {k: v for k, v, _ in leaves(recorded)}
    return [f"'{k}' was {clip(repr(old[k]), 60)}, now {clip(repr(v), 60)}"
            for k, v, _ in leaves(now) if not resumable(k) and old[k] != v]


def data_fingerprint(data: DataConfig, info: DatasetInfo, recorded: dict | None = None) -> dict:
    """What the run's split depends on (module docstring). A shard whose size and modification time are those
    of ``recorded`` (the run's record) keeps its recorded hash; any other is hashed (from the dataset's
    manifest when it lists the file at this size, else by reading it)."""
    root = storage.resolve(data.root)
    shards = resolve(root, info.shards_dir)
    dirs = [storage.join(shards, data.train_subset or info.train_subset),
            storage.join(shards, data.test_subset or info.test_subset)]
    if info.unlabeled_shards:
        dirs.append(resolve(root, info.unlabeled_shards))
    files: dict[str, tuple[int, int]] = {}
    for d in dirs:
        if storage.is_dir(d):
            files.update(storage.list_file_infos(d, suffix=".parquet"))
    inside = root.rstrip("/") + "/"
    before = (recorded or {}).get("shards", {})
    written = None
    out: dict[str, dict] = {}
    for f, (size, mtime) in files.items():
        rel = f[len(inside):] if f.startswith(inside) else f
        old = before.get(rel)
        old = old if isinstance(old, dict) else {"bytes": old}  # a record of sizes only, from before hashes
        if recorded is not None and old["bytes"] == size and old.get("mtime_us") == mtime and old.get("sha256"):
            sha = old["sha256"]
        elif recorded is not None and old["bytes"] != size:
            sha = None  # new, or changed whatever its bytes are: not worth reading
        elif recorded is not None:
            sha = storage.sha256_file(f)  # rewritten since the record (or recorded without a hash): read it
        else:
            if written is None:
                manifest = read_manifest(root)
                written = manifest.files if manifest is not None else {}
            listed = written.get(rel) or {}
            sha = listed.get("sha256") if listed.get("bytes") == size and listed.get("sha256") else None
            sha = sha or storage.sha256_file(f)
        out[rel] = {"bytes": size, "mtime_us": mtime, "sha256": sha}
    return {"root": root,
            "dataset_yaml_sha256": hashlib.sha256(storage.read_bytes(storage.join(root, "dataset.yaml"))).hexdigest(),
            "shards": out}


def data_changes(recorded: dict, now: dict) -> list[str]:
    """What differs between two fingerprints, for a message (a record of sizes only, from before hashes were
    recorded, is compared by size)."""
    out = []
    if recorded.get("dataset_yaml_sha256") != now["dataset_yaml_sha256"]:
        out.append("dataset.yaml changed")
    old, new = recorded.get("shards", {}), now["shards"]
    for f in sorted(set(old) | set(new)):
        if f not in new:
            out.append(f"{f} is gone")
            continue
        if f not in old:
            out.append(f"{f} is new")
            continue
        was, now = (e if isinstance(e, dict) else {"bytes": e} for e in (old[f], new[f]))
        if was.get("bytes") != now.get("bytes"):
            out.append(f"{f} has {now.get('bytes')} bytes, had {was.get('bytes')}")
        elif was.get("sha256") and now.get("sha256") and was["sha256"] != now["sha256"]:
            out.append(f"{f}: its bytes changed (sha256 {now['sha256'][:12]}…, recorded {was['sha256'][:12]}…; "
                       "same size)")
    return out


def _listing(items: list[str]) -> str:
    more = f" (and {len(items) - _SHOWN_CHANGES} more)" if len(items) > _SHOWN_CHANGES else ""
    return "; ".join(items[:_SHOWN_CHANGES]) + more


def _recorded_config(path: str, run_dir: str) -> Config:
    """The config a run recorded: flat YAML as ``save_config`` writes it, local or a storage URI."""
    try:
        return from_dict(read_yaml_mapping(path, ConfigError), path)
    except ConfigError as e:
        text = str(e) if str(e).startswith(path) else f"{path}: {e}"
        raise RunStateError(f"{text} (this is the record of the config that made the run in {run_dir}: restore "
                            "it, or give the new run another run.dir)") from None


def recorded_data(path: str) -> dict:
    """The data fingerprint a run recorded (``run.json``); ``RunStateError`` naming the file when it is not one."""
    def error(message: str) -> RunStateError:
        return RunStateError(f"{message} (the fingerprint of the data the run was split from: restore it, or give "
                             "the new run another run.dir)")

    record = read_json(path, error, max_bytes=MAX_RECORD_BYTES)
    data = record.get("data") if isinstance(record, dict) else None
    if not (isinstance(data, dict) and isinstance(data.get("shards"), dict)
            and isinstance(data.get("dataset_yaml_sha256"), str)):
        raise error(f"{path}: not a run record (expected {{\"data\": {{\"dataset_yaml_sha256\", \"shards\"}}}})")
    for f, entry in data["shards"].items():
        fine = (type(entry) is int if not isinstance(entry, dict) else
                type(entry.get("bytes")) is int and isinstance(entry.get("sha256"), (str, type(None)))
                and type(entry.get("mtime_us", 0)) is int)
        if not fine:
            raise error(f"{path}: shard '{clip(f)}': expected {{bytes, mtime_us, sha256}}, got {clip(repr(entry))}")
    return data


def open_record(cfg: Config, run_dir: str, info: DatasetInfo) -> None:
    """Check ``cfg`` and the data against the run's record (module docstring) and write the record: a new run
    gets one, a resumed one has ``config.yaml`` updated to the resumable keys' new values. Raises
    ``RunStateError`` naming what differs or which state file cannot be read; nothing is written then."""
    config_path = storage.join(run_dir, "config.yaml")
    record_path = storage.join(run_dir, RECORD_NAME)
    if not storage.exists(config_path):
        if storage.exists(storage.join(run_dir, "stages.json")):
            raise RunStateError(f"{config_path}: missing, but {run_dir}/stages.json records finished stages: the "
                                "run cannot tell which config made them; restore config.yaml, or give this run "
                                "another run.dir")
        storage.write_text(record_path, json.dumps({"created": time.time(), "data": data_fingerprint(cfg.data, info)},
                                                   indent=1))
        save_config(cfg, config_path)
        return
    recorded = _recorded_config(config_path, run_dir)
    changes = config_changes(recorded, cfg)
    if changes:
        teacher = storage.join(run_dir, "round_0", "train", "final.pt")
        share = (f"; with run.teacher={teacher} the new run starts from this run's teacher, if the changed keys "
                 "cannot change round 0") if storage.exists(teacher) else ""
        raise RunStateError(
            f"{run_dir}: this run directory holds a run of another config: {_listing(changes)}. Only "
            f"{', '.join(k + '*' if k.endswith('.') else k for k in RESUMABLE_KEYS)} may change when a run "
            f"resumes; give this config another run.dir (config.yaml is left as it was){share}")
    if storage.exists(record_path):
        data = recorded_data(record_path)
        fingerprint = data_fingerprint(cfg.data, info, recorded=data)
        changed = data_changes(data, fingerprint)
        if changed:
            raise RunStateError(
                f"{run_dir}: the dataset under data.root={fingerprint['root']} changed since this run was split "
                f"(recorded in {record_path}): {_listing(changed)}. Restore the dataset, or start a new run with "
                "another run.dir")
        if fingerprint != data:  # the same bytes with new times (or hashes a record from before them lacked)
            record = read_json(record_path, RunStateError, max_bytes=MAX_RECORD_BYTES)
            storage.write_text(record_path, json.dumps({**record, "data": fingerprint}, indent=1))
    else:  # a run made before runs recorded their data (or killed between the two writes of a new run)
        log.warning("%s: no record of the data this run was split from; recording the dataset as it is now", run_dir)
        storage.write_text(record_path, json.dumps({"created": time.time(), "data": data_fingerprint(cfg.data, info)},
                                                   indent=1))
    if to_dict(recorded) != to_dict(cfg):
        save_config(cfg, config_path)
