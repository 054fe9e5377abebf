"""Typed references that assets hand to each other (never "whatever is in a fixed folder now").

Each materialisation writes its files under its own versioned location (a run id or a content hash)
and returns one of these; :class:`RefIOManager` stores the reference itself as JSON, per asset and
partition, so a downstream asset receives exactly the output its upstream materialisation wrote.

No pickle: a stored reference is read back only into the pydantic model named by its ``kind`` from
:data:`REF_KINDS`; anything else is refused.
"""

from __future__ import annotations

import json
from typing import Any

from dagster import ConfigurableIOManager, InputContext, OutputContext
from pydantic import BaseModel, ConfigDict, Field

from fgclip_core import storage


class Ref(BaseModel):
    """Base of every reference: where the output lives and what identifies its content."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    uri: str = Field(description="folder (local path or s3:// URL) that holds this output, never rewritten")
    sha256: str = Field(description="content hash of the output (a manifest hash where there is a manifest)")
    partition: str | None = Field(default=None, description="image batch this output belongs to, if partitioned")
    counts: dict[str, int] = Field(default_factory=dict, description="counts a reader checks (records, samples ...)")


class RecordsRef(Ref):
    """A JSONL record set (captions, boxes, negatives, validated records) of one image batch."""

    kind: str = "records"
    images_uri: str = Field(description="folder of the batch's images that the records' f_path values are relative to")


class ShardSetRef(Ref):
    """WebDataset shards + manifest of one image batch (``training_shards``)."""

    kind: str = "shards"
    manifest_uri: str
    samples: int
    shards: int


class ModelRef(Ref):
    """An exported Hugging Face-layout model folder (``base_checkpoint``, ``trained_model``)."""

    kind: str = "model"
    mlflow_run_id: str | None = None
    trained_on: dict[str, str] = Field(default_factory=dict, description="partition -> shard manifest sha256")
    base_checkpoint_sha256: str | None = Field(default=None, description="the checkpoint training started from")
    dagster_run_id: str | None = Field(default=None, description="the Dagster run that wrote it")


class EvalRef(Ref):
    """An evaluation output folder with metrics.json (``evaluation``, ``eval_benchmarks``)."""

    kind: str = "eval"
    metrics: dict[str, float] = Field(default_factory=dict)
    mlflow_run_id: str | None = None
    benchmarks_sha256: str | None = Field(default=None, description="the benchmark set (eval.suite_hash) measured on")
    model_sha256: str | None = Field(default=None, description="the model evaluated")
    baseline_metrics: dict[str, float] = Field(default_factory=dict, description="the starting checkpoint's")
    champion_version: str | None = None
    champion_metrics: dict[str, float] | None = Field(
        default=None, description="the champion's on the same benchmark set (None: no champion)")


REF_KINDS: dict[str, type[Ref]] = {"records": RecordsRef, "shards": ShardSetRef, "model": ModelRef, "eval": EvalRef}


def ref_from_json(text: str, source: str) -> Ref:
    """Parse a stored reference; a kind outside :data:`REF_KINDS` or bad fields is refused naming ``source``."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{source}: not a JSON reference ({e})") from None
    kind = data.get("kind") if isinstance(data, dict) else None
    cls = REF_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"{source}: unknown reference kind {kind!r} (expected one of {sorted(REF_KINDS)})")
    return cls.model_validate(data)


class RefIOManager(ConfigurableIOManager):
    """Stores asset outputs that are :class:`Ref` objects as JSON under ``<base_url>/refs/<asset>/<partition>.json``.

    A downstream asset that depends on several partitions receives ``dict[partition, Ref]``.
    """

    base_url: str = Field(description="local folder or s3:// URL under which references are stored")

    def _url(self, asset_key: Any, partition: str | None) -> str:
        return storage.join(self.base_url, "refs", *asset_key.path, f"{partition or '__unpartitioned__'}.json")

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        if obj is None:
            return
        if not isinstance(obj, Ref):
            raise TypeError(f"{context.asset_key.to_user_string()}: RefIOManager stores Ref objects, got {type(obj)}")
        partition = context.partition_key if context.has_partition_key else None
        url = self._url(context.asset_key, partition)
        fs, path = storage.filesystem(url)
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        tmp = f"{path}.tmp"
        with fs.open(tmp, "w") as f:
            f.write(obj.model_dump_json(indent=1))
        fs.mv(tmp, path)

    def _read(self, asset_key: Any, partition: str | None) -> Ref:
        url = self._url(asset_key, partition)
        fs, path = storage.filesystem(url)
        if not fs.exists(path):
            raise FileNotFoundError(f"{url}: no stored reference (materialise {asset_key.to_user_string()} first)")
        with fs.open(path, "r") as f:
            return ref_from_json(f.read(), url)

    def load_input(self, context: InputContext) -> Any:
        key = context.asset_key
        if context.has_asset_partitions:
            keys = list(context.asset_partition_keys)
            # Same partition as the step (identity mapping): the one reference; otherwise partition -> ref.
            if len(keys) == 1 and context.has_partition_key and context.partition_key == keys[0]:
                return self._read(key, keys[0])
            # Several partitions (e.g. AllPartitionMapping): the ones materialised so far; the others are
            # named in the log, and none at all is an error.
            stored = {k: self._read(key, k) for k in keys if self._exists(key, k)}
            missing = sorted(set(keys) - set(stored))
            if missing:
                context.log.warning("%s: partitions not materialised yet, left out: %s",
                                    key.to_user_string(), ", ".join(missing))
            if not stored:
                raise FileNotFoundError(f"{key.to_user_string()}: no partition materialised yet "
                                        f"(of {len(keys)}: {', '.join(keys[:10])})")
            return stored
        return self._read(key, None)

    def _exists(self, asset_key: Any, partition: str | None) -> bool:
        fs, path = storage.filesystem(self._url(asset_key, partition))
        return bool(fs.exists(path))

    def load(self, asset_key: Any, partition: str | None = None) -> Ref:
        """The stored reference of ``asset_key`` (and partition) outside an asset's inputs (e.g. in an op)."""
        return self._read(asset_key, partition)
