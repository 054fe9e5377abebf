"""`fgclip registry`: register an exported checkpoint in MLflow and promote it by a gate metric."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click


@contextmanager
def _mlflow_errors(tracking_uri: str | None) -> Iterator[None]:
    """An error answered by the MLflow server (bad name, permission, server error) as one line."""
    from mlflow.exceptions import MlflowException

    from fgclip_core.redact import redact_uri

    try:
        yield
    except MlflowException as e:
        import mlflow

        raise click.ClickException(f"MLflow at {redact_uri(tracking_uri or mlflow.get_tracking_uri())}: "
                                   f"{e.message}") from e


def _call(fn: Callable, tracking_uri: str | None, *args, **kwargs):
    with _mlflow_errors(tracking_uri):
        return fn(*args, tracking_uri=tracking_uri, **kwargs)


def _read_metrics(paths: tuple[str, ...]) -> dict[str, float]:
    """Merge ``metrics.json`` files written by ``fgclip eval`` as ``SUITE/KEY`` -> value (``fgclip eval all``
    already names each key ``BENCHMARK/KEY``)."""
    out: dict[str, float] = {}
    for p in paths:
        try:
            data = json.loads(Path(p).read_text())
            suite, metrics = data["suite"], data["metrics"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise click.ClickException(f"{p}: not an fgclip eval metrics.json ({e})") from e
        prefix = "" if suite == "all" else f"{suite}/"
        out.update({f"{prefix}{k}": float(v) for k, v in metrics.items()})
    return out


@click.group(name="registry")
def registry() -> None:
    """MLflow model registry: register (alias challenger) and promote (alias champion)."""


@registry.command("register")
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Exported FG-CLIP checkpoint directory (e.g. OUTPUT/export).")
@click.option("--name", required=True, help="Registered model name.")
@click.option("--metrics", "metrics_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="metrics.json from `fgclip eval` (repeatable); stored as SUITE/KEY version tags.")
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI")
def register(model_dir: str, name: str, metrics_files: tuple[str, ...], tracking_uri: str | None) -> None:
    """Log MODEL as a pyfunc, register a new version of NAME, alias it `challenger`."""
    from fgclip_core.eval.protocol import merged_records, protocol_tags
    from fgclip_core.registry import register_checkpoint

    metrics = _read_metrics(metrics_files)  # validates the files
    tags = protocol_tags(merged_records([json.loads(Path(p).read_text()) for p in metrics_files]))
    rv = _call(register_checkpoint, tracking_uri, model_dir, name, metrics=metrics, tags=tags)
    click.echo(json.dumps({"name": rv.name, "version": rv.version, "model_uri": rv.model_uri, "run_id": rv.run_id}))


@registry.command("promote")
@click.option("--name", required=True)
@click.option("--version", required=True)
@click.option("--metric", required=True, help="Gate metric, e.g. fgovd/accuracy.")
@click.option("--lower-is-better", is_flag=True)
@click.option("--min-delta", type=float, default=0.0, show_default=True)
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI")
def promote_cmd(name: str, version: str, metric: str, lower_is_better: bool, min_delta: float,
                tracking_uri: str | None) -> None:
    """Alias VERSION `champion` if METRIC beats the current champion."""
    from fgclip_core.registry import promote

    d = _call(promote, tracking_uri, name, version, metric, higher_is_better=not lower_is_better,
              min_delta=min_delta)
    click.echo(json.dumps(d.to_dict()))
