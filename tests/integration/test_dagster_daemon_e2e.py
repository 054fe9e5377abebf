"""End to end through the real servers: dagster-webserver and dagster-daemon on loopback with the
embedded dagster.yaml (run queue, pools, run retries) in a temporary DAGSTER_HOME.

As a user in the UI: add a partition and launch its run through GraphQL (the UI's own mutations),
watch it succeed; then drop a second batch into the raw source and watch the daemon's sensor add
its partition and run annotate_batch for it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from dagster import DagsterInstance

from fgclip_core.sample.batches import land_sample_batch
from orchestration.instance import prepare_dagster_home

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODULE = "orchestration.definitions"

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
  }
}"""
ADD_PARTITION = """
mutation Add($sel: RepositorySelector!, $name: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $sel, partitionsDefName: $name, partitionKey: $key) {
    __typename
    ... on AddDynamicPartitionSuccess { partitionKey }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}"""
RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    ... on Runs { results { runId status tags { key value } } }
  }
}"""
RUN = """query Run($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"""
REPOS = """{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }"""
SENSOR = """
query Sensor($sel: SensorSelector!) {
  sensorOrError(sensorSelector: $sel) { __typename ... on Sensor { sensorState { status } } }
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, probe: Callable[[], Any], timeout_s: float, every_s: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (httpx.HTTPError, OSError) as e:
            last = e
        else:
            if last:
                return last
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what} (last: {last!r})")


class GraphQL:
    def __init__(self, port: int):
        self.url = f"http://127.0.0.1:{port}/graphql"

    def __call__(self, query: str, **variables: Any) -> dict[str, Any]:
        resp = httpx.post(self.url, json={"query": query, "variables": variables}, timeout=30)
        resp.raise_for_status()
        body = resp.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]


@pytest.fixture()
def servers(tmp_path):
    raw, data, home = tmp_path / "raw", tmp_path / "data", tmp_path / "dagster_home"
    raw.mkdir()
    prepare_dagster_home(home, max_concurrent_runs=2, dequeue_interval_s=1)
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "FGCLIP_HOME": str(tmp_path / "fgclip"),
           "FGCLIP_RAW_URL": str(raw), "FGCLIP_DATA_URL": str(data), "FGCLIP_SENSOR_INTERVAL_S": "2",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen] = []
    for name, cmd in (("webserver", [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
                                     "-m", MODULE]),
                      ("daemon", [str(BIN / "dagster-daemon"), "run", "-m", MODULE])):
        out = (logs / f"{name}.log").open("w")
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True))
    gql = GraphQL(port)
    try:
        _wait("the webserver", lambda: httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=5)
              .status_code == 200, 150)
        nodes = _wait("the code location", lambda: gql(REPOS)["repositoriesOrError"].get("nodes"), 150, 2)
        (repo,) = nodes
        sel = {"repositoryName": repo["name"], "repositoryLocationName": repo["location"]["name"]}
        yield gql, sel, raw, logs, home
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)


def _run_status(gql: GraphQL, run_id: str) -> str:
    return gql(RUN, id=run_id)["runOrError"]["status"]


def _finished(gql: GraphQL, run_id: str) -> str | None:
    status = _run_status(gql, run_id)
    return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None


def _log_tail(logs: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(logs.iterdir()))


def test_launch_through_graphql_then_the_sensor_runs_a_new_batch(servers):
    gql, sel, raw, logs, home = servers
    sensor = gql(SENSOR, sel={**sel, "sensorName": "raw_batches_sensor"})["sensorOrError"]
    assert sensor["sensorState"]["status"] == "RUNNING"  # on by default

    # 1. As in the UI: add the partition, then materialise it (the partition is known before the
    #    batch lands, so the sensor leaves it to us).
    added = gql(ADD_PARTITION, sel=sel, name="image_batches", key="batch-0001")["addDynamicPartition"]
    assert added["__typename"] == "AddDynamicPartitionSuccess", added
    land_sample_batch(str(raw), 1)
    params = {
        "selector": {**sel, "jobName": "annotate_batch"},
        "runConfigData": {"ops": {"training_shards": {"config": {"store_token_ids": False}}}},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "batch-0001"}]},
    }
    launched = gql(LAUNCH, params=params)["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    status = _wait("the launched run", lambda: _finished(gql, run_id), 150, 2)
    assert status == "SUCCESS", _log_tail(logs)

    # 2. A new batch lands: the daemon's sensor adds its partition and runs annotate_batch for it.
    land_sample_batch(str(raw), 2)

    def sensor_run():
        runs = gql(RUNS, filter={"tags": [{"key": "dagster/partition", "value": "batch-0002"}]})
        results = runs["runsOrError"]["results"]
        done = [r for r in results if r["status"] in ("SUCCESS", "FAILURE", "CANCELED")]
        return done or None

    done = _wait("the sensor's run of batch-0002", sensor_run, 200, 3)
    assert [r["status"] for r in done] == ["SUCCESS"], _log_tail(logs)
    tags = {t["key"]: t["value"] for t in done[0]["tags"]}
    assert tags.get("dagster/sensor_name") == "raw_batches_sensor" and tags.get("fgclip/batch") == "batch-0002"
    with DagsterInstance.from_config(str(home)) as instance:  # the daemon's instance, read as the UI does
        assert instance.get_dynamic_partitions("image_batches") == ["batch-0001", "batch-0002"]
    # the first batch was never run by the sensor: only our launch
    first = gql(RUNS, filter={"tags": [{"key": "dagster/partition", "value": "batch-0001"}]})
    assert [r["runId"] for r in first["runsOrError"]["results"]] == [run_id]
