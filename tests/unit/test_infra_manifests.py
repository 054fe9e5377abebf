"""infra/ (Dockerfile, Kubernetes manifests, Dagster Helm values) keeps its contract with the code: every
command and flag exists, every variable set is read, the Dagster code location is workspace.yaml's module,
names/images/ports agree between the files. Each check is also shown to catch a broken copy."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest

from tests.unit import infra_consistency as cons
from tests.unit import infra_contract as ic

CHECKS: dict[str, Callable[[ic.Infra], list[str]]] = {
    "commands": ic.check_commands, "env": ic.check_env, "code_location": ic.check_code_location,
    "images": cons.check_images, "mlflow": cons.check_mlflow, "training_job": cons.check_training_job,
    "references": cons.check_references, "dockerfile": cons.check_dockerfile, "secrets": cons.check_secrets,
}


@pytest.fixture(scope="module")
def infra() -> ic.Infra:
    return ic.load_infra()


def test_every_manifest_parses_and_names_its_kind(infra) -> None:
    assert {(d["kind"], d["metadata"]["name"]) for d in infra.docs} >= {
        ("ConfigMap", "fgclip-env"), ("PersistentVolumeClaim", "fgclip-home"), ("Service", "mlflow"),
        ("Deployment", "mlflow"), ("Service", "fgclip-train"), ("Job", "fgclip-train")}
    assert infra.values["runLauncher"]["type"] == "K8sRunLauncher"
    assert infra.values["postgresql"]["enabled"] is False and infra.values["generatePostgresqlPasswordSecret"] is False


@pytest.mark.parametrize("name", CHECKS)
def test_contract_holds(infra, name: str) -> None:
    assert CHECKS[name](infra) == []


def test_configmap_values_are_accepted_by_the_settings(infra, monkeypatch) -> None:
    assert ic.check_env_values(infra, monkeypatch.setenv) == []


def _job_args(i: ic.Infra) -> list[str]:
    return i.one("Job", "fgclip-train")["spec"]["template"]["spec"]["containers"][0]["args"]


def _mlflow_args(i: ic.Infra) -> list[str]:
    return i.one("Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]["args"]


def _replace(items: list, old, new) -> None:
    items[items.index(old)] = new


SABOTAGE: list[tuple[str, Callable[[ic.Infra], None], str]] = [
    ("commands", lambda i: _job_args(i).append("--max-step=3"), "No such option '--max-step'"),
    ("commands", lambda i: _job_args(i).insert(0, "--num-nodes=2"), "torchrun: cannot parse"),
    ("commands", lambda i: _replace(_job_args(i), "--node_rank=$(NODE_RANK)", "--node_rank=$(RANK_OF_NODE)"),
     "torchrun: cannot parse"),
    ("commands", lambda i: _mlflow_args(i).append("--artifact-destination=s3://x"), "mlflow server: No such option"),
    ("commands", lambda i: i.values["dagster-user-deployments"]["deployments"][0]["dagsterApiGrpcArgs"].append(
        "--modul"), "dagster api grpc: No such option"),
    ("commands", lambda i: setattr(i, "dockerfile", i.dockerfile.replace('CMD ["fgclip"', 'CMD ["fgclipp"')),
     "fgclipp: not a program"),
    ("env", lambda i: i.one("ConfigMap", "fgclip-env")["data"].update(FGCLIP_DATA_URI="/x"), "FGCLIP_DATA_URI"),
    ("code_location", lambda i: _replace(i.values["dagster-user-deployments"]["deployments"][0]["dagsterApiGrpcArgs"],
                                         "orchestration.definitions", "orchestration.defs"), "module orchestration.defs"),
    ("images", lambda i: i.one("Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0].update(
        image="fgclip:0.0.9"), "image fgclip:0.0.9"),
    ("mlflow", lambda i: i.one("ConfigMap", "fgclip-env")["data"].update(MLFLOW_TRACKING_URI="http://mlflow:80"),
     "MLFLOW_TRACKING_URI"),
    ("mlflow", lambda i: _replace(_mlflow_args(i), "--port=5000", "--port=5001"), "!= --port 5001"),
    ("mlflow", lambda i: i.values["postgresql"].update(postgresqlHost="db"), "is not Dagster's db:5432"),
    ("training_job", lambda i: _replace(_job_args(i), "--master_addr=fgclip-train-0.fgclip-train",
                                        "--master_addr=fgclip-train-0"), "is not pod 0's DNS name"),
    ("training_job", lambda i: i.one("Job", "fgclip-train")["spec"].update(completions=3), "must be equal"),
    ("training_job", lambda i: _replace(_job_args(i), "--nproc_per_node=8", "--nproc_per_node=4"), "nvidia.com/gpu"),
    ("training_job", lambda i: _replace(_job_args(i), "--output=/var/lib/fgclip/runs/stage2", "--output=/tmp/run"),
     "is not on the shared ReadWriteMany volume"),
    ("training_job", lambda i: i.one("Job", "fgclip-train")["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "DS_ACCELERATOR", "value": "cpu"}), "leave it unset"),
    ("training_job", lambda i: i.one("Service", "fgclip-train")["spec"].update(clusterIP="10.0.0.1"),
     "is not a headless Service"),
    ("references", lambda i: i.values["runLauncher"]["config"]["k8sRunLauncher"]["envConfigMaps"].append(
        {"name": "fgclip-envs"}), "ConfigMap fgclip-envs is not defined"),
    ("references", lambda i: i.one("Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "fgclip-env", "key": "NOPE"}}}), "has no key NOPE"),
    ("secrets", lambda i: i.values["global"].update(postgresqlSecretName="dagster-pg"),
     "Secret dagster-pg is read but"),
    ("secrets", lambda i: i.one("Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]["env"][0][
        "valueFrom"]["secretKeyRef"].update(key="password"), "keys ['password'] are read but not created"),
    ("dockerfile", lambda i: setattr(i, "dockerfile", i.dockerfile.replace("COPY assets ./assets",
                                                                           "COPY asset ./assets")), "COPY asset:"),
    ("dockerfile", lambda i: setattr(i, "dockerfile", i.dockerfile.replace("open-clip-torch==3.3.0",
                                                                           "open-clip-torch==3.2.0")), "OPEN_CLIP_WHEEL"),
    ("dockerfile", lambda i: setattr(i, "dockerfile", i.dockerfile.replace("ENV PIP_NO_CACHE_DIR=1",
                                                                           "ENV DS_ACCELERATOR=cpu PIP_NO_CACHE_DIR=1")),
     "ENV DS_ACCELERATOR"),
]


@pytest.mark.parametrize(("check", "breaks", "message"), SABOTAGE,
                         ids=[f"{c}-{n}" for n, (c, _, _) in enumerate(SABOTAGE)])
def test_each_check_catches_a_broken_copy(infra, check: str, breaks, message: str) -> None:
    broken = copy.deepcopy(infra)
    breaks(broken)
    problems = CHECKS[check](broken)
    assert any(message in p for p in problems), problems


def test_configmap_check_takes_an_s3_data_root_and_catches_a_local_one_off_the_volume_and_a_bad_number(
        infra, monkeypatch) -> None:
    on_s3 = copy.deepcopy(infra)
    on_s3.one("ConfigMap", "fgclip-env")["data"].update(FGCLIP_DATA_URL="s3://b/data")
    assert ic.check_env_values(on_s3, monkeypatch.setenv) == []
    broken = copy.deepcopy(infra)
    broken.one("ConfigMap", "fgclip-env")["data"].update(FGCLIP_DATA_URL="/tmp/data", FGCLIP_KEEP_VERSIONS="0")
    problems = ic.check_env_values(broken, monkeypatch.setenv)
    assert any("not under FGCLIP_HOME" in p for p in problems), problems
    assert any("FGCLIP_KEEP_VERSIONS" in p for p in problems), problems
