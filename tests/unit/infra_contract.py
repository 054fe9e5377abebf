"""What the deployment files in ``infra/`` promise the code, as functions that list broken promises.

Each ``check_*`` takes the parsed files (``Infra``) and returns a list of problems (empty: kept), so the
tests can also show that each check catches a broken copy. Commands are checked by parsing them with the
real parsers: the ``fgclip`` click group, ``python -m fgclip_core.train``, torchrun's argument parser,
``mlflow server`` and ``dagster api grpc``.
"""

from __future__ import annotations

import contextlib
import io
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from fgclip_core.safe_yaml import load_yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "infra" / "k8s"
DOCKERFILE = REPO / "infra" / "docker" / "Dockerfile"
CODE_DIRS = ("fgclip_core", "assets", "orchestration")

# Names the manifests set that other programs read (not this project's code), with the reader.
THIRD_PARTY_ENV = {
    "AWS_ACCESS_KEY_ID": "boto3/s3fs", "AWS_SECRET_ACCESS_KEY": "boto3/s3fs", "AWS_DEFAULT_REGION": "boto3/s3fs",
    "PGPASSWORD": "libpq (MLflow's PostgreSQL backend)",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "mlflow server",
    "TOKENIZERS_PARALLELISM": "tokenizers",
    "NODE_RANK": "the training Job itself ($(NODE_RANK) in torchrun's arguments)",
    "PIP_NO_CACHE_DIR": "pip (image build)", "PYTHONDONTWRITEBYTECODE": "python",
}


@dataclass
class Infra:
    docs: list[dict[str, Any]]                 # every Kubernetes object of infra/k8s/*.yaml except Helm values
    values: dict[str, Any]                     # infra/k8s/dagster-values.yaml
    dockerfile: str = ""
    env_in_code: set[str] = field(default_factory=set)

    def objects(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d.get("kind") == kind]

    def one(self, kind: str, name: str) -> dict[str, Any] | None:
        return next((d for d in self.objects(kind) if d["metadata"]["name"] == name), None)


def load_infra() -> Infra:
    docs: list[dict[str, Any]] = []
    values: dict[str, Any] = {}
    for path in sorted(K8S.glob("*.yaml")):
        parts = [p for p in re.split(r"(?m)^---\s*$", path.read_text()) if p.strip()]
        loaded = [load_yaml(p, str(path)) for p in parts]
        if path.name == "dagster-values.yaml":
            values = loaded[0]
        else:
            docs += loaded
    code = "\n".join(f.read_text() for d in CODE_DIRS for f in (REPO / d).rglob("*.py"))
    env_in_code = set(re.findall(r"[\"']([A-Z][A-Z0-9_]{2,})[\"']", code))
    return Infra(docs, values, DOCKERFILE.read_text(), env_in_code)


# -- containers --------------------------------------------------------------------------------------------
@dataclass
class Container:
    where: str
    spec: dict[str, Any]
    pod: dict[str, Any]

    @property
    def argv(self) -> list[str]:
        return [str(a) for a in (self.spec.get("command") or []) + (self.spec.get("args") or [])]

    @property
    def env_names(self) -> list[str]:
        return [e["name"] for e in self.spec.get("env") or []]


def containers(infra: Infra) -> Iterator[Container]:
    for d in infra.docs:
        tpl = (d.get("spec") or {}).get("template")
        if tpl:
            for c in tpl["spec"]["containers"]:
                yield Container(f"{d['kind']}/{d['metadata']['name']}/{c['name']}", c, tpl["spec"])


def expand(arg: str, c: Container) -> str:
    """Kubernetes' $(VAR) expansion with a sample value (0) for the container's own env; an unknown
    name stays literal, as Kubernetes leaves it, and then fails to parse."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: "0" if m.group(1) in c.env_names else m.group(0), arg)


# -- commands ----------------------------------------------------------------------------------------------
def _parse_click(cmd: click.Command, name: str, args: list[str]) -> str | None:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return _parse_click_quiet(cmd, name, args)


def _parse_click_quiet(cmd: click.Command, name: str, args: list[str]) -> str | None:
    try:
        with cmd.make_context(name, list(args)) as ctx:
            if isinstance(cmd, click.Group):
                rest = [*ctx._protected_args, *ctx.args] if hasattr(ctx, "_protected_args") else \
                    [*ctx.protected_args, *ctx.args]
                sub_name, sub, sub_args = cmd.resolve_command(ctx, rest)
                assert sub is not None and sub_name is not None
                return _parse_click_quiet(sub, f"{name} {sub_name}", sub_args)
    except click.exceptions.Exit:
        return None   # --help
    except click.ClickException as e:
        return f"{name}: {e.format_message()}"
    return None


def check_argv(argv: list[str]) -> str | None:
    """None when every program, subcommand and flag of ``argv`` exists; else what does not."""
    prog, args = argv[0], argv[1:]
    if prog == "fgclip":
        from fgclip_core.cli import cli

        return _parse_click(cli, "fgclip", args)
    if prog in ("python", "python3") and args[:1] == ["-m"]:
        return check_module(args[1], args[2:])
    if prog == "torchrun":
        from torch.distributed.run import get_args_parser

        try:
            with contextlib.redirect_stderr(io.StringIO()):
                ns = get_args_parser().parse_args(args)
        except SystemExit:
            return f"torchrun: cannot parse {args}"
        if not ns.module:
            return "torchrun: expected -m MODULE"
        return check_module(ns.training_script, ns.training_script_args)
    if prog == "mlflow":
        from mlflow.cli import cli as mlflow_cli

        return _parse_click(mlflow_cli, "mlflow", args)
    if prog == "dagster":
        from dagster._cli import cli as dagster_cli

        return _parse_click(dagster_cli, "dagster", args)
    return f"{prog}: not a program this project installs"


def check_module(module: str, args: list[str]) -> str | None:
    if module == "fgclip_core.train":
        from fgclip_core.cli.train_cmd import train

        return _parse_click(train, "python -m fgclip_core.train", args)
    if module == "fgclip_core":
        return check_argv(["fgclip", *args])
    return f"python -m {module}: not a command module of this project"


def check_commands(infra: Infra) -> list[str]:
    problems = []
    for c in containers(infra):
        argv = [expand(a, c) for a in c.argv]
        if argv and (p := check_argv(argv)):
            problems.append(f"{c.where}: {p}")
    for dep in infra.values["dagster-user-deployments"]["deployments"]:
        port = str(dep["port"])
        if p := check_argv(["dagster", "api", "grpc", *dep["dagsterApiGrpcArgs"], "-h", "0.0.0.0", "-p", port]):
            problems.append(f"dagster user deployment {dep['name']}: {p}")
    cmd = re.search(r"^CMD\s+(\[.*\])", infra.dockerfile, re.M)
    if cmd is None:
        problems.append("Dockerfile: no CMD")
    elif p := check_argv(re.findall(r'"([^"]*)"', cmd.group(1))):
        problems.append(f"Dockerfile CMD: {p}")
    return problems


# -- environment -------------------------------------------------------------------------------------------
def config_map(infra: Infra, name: str = "fgclip-env") -> dict[str, str]:
    cm = infra.one("ConfigMap", name)
    return dict(cm["data"]) if cm else {}


def env_set(infra: Infra) -> dict[str, list[str]]:
    """Every environment variable name the files set -> where."""
    found: dict[str, list[str]] = {}
    for cm in infra.objects("ConfigMap"):
        for k in cm.get("data") or {}:
            found.setdefault(k, []).append(f"ConfigMap/{cm['metadata']['name']}")
    for c in containers(infra):
        for k in c.env_names:
            found.setdefault(k, []).append(c.where)
    for dep in infra.values["dagster-user-deployments"]["deployments"]:
        for e in dep.get("env") or []:
            found.setdefault(e["name"], []).append(f"dagster user deployment {dep['name']}")
    for line in dockerfile_instructions(infra.dockerfile, "ENV"):
        for k in re.findall(r"(?:^|\s)([A-Z][A-Z0-9_]+)=", line):
            found.setdefault(k, []).append("Dockerfile ENV")
    return found


def check_env(infra: Infra) -> list[str]:
    problems = []
    for name, where in sorted(env_set(infra).items()):
        if name in infra.env_in_code:
            continue
        if name in THIRD_PARTY_ENV and not name.startswith("FGCLIP_"):   # a FGCLIP_ name must be read here
            continue
        problems.append(f"{name} (set in {', '.join(where)}): read neither by the project's code nor by a "
                        "known library")
    return problems


def check_env_values(infra: Infra, setenv) -> list[str]:
    """The ConfigMap's values are ones the code accepts (``setenv(name, value)`` patches os.environ)."""
    from fgclip_core import storage
    from orchestration import settings

    env = config_map(infra)
    for k, v in env.items():
        setenv(k, v)
    problems = []
    for read in (settings.sensor_interval_s, settings.keep_versions, settings.retrain_cron, settings.data_url):
        try:
            read()
        except ValueError as e:
            problems.append(f"ConfigMap fgclip-env: {e}")
    # an s3:// data root is fine (the model side publishes from a scratch folder); a local one must be the
    # shared volume, or each pod would see its own
    if not storage.is_remote(settings.data_url()) and not settings.data_url().startswith(env.get("FGCLIP_HOME", "?")):
        problems.append("FGCLIP_DATA_URL is not under FGCLIP_HOME (the shared volume)")
    if "DS_ACCELERATOR" in env:
        problems.append("DS_ACCELERATOR in the shared ConfigMap: GPU pods (the training Job) must leave it unset")
    return problems


# -- Dagster code location ---------------------------------------------------------------------------------
def check_code_location(infra: Infra) -> list[str]:
    workspace = load_yaml((REPO / "workspace.yaml").read_text(), "workspace.yaml")
    modules = {e["python_module"]["module_name"] for e in workspace["load_from"]}
    dg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dg"]["project"]
    problems = []
    for dep in infra.values["dagster-user-deployments"]["deployments"]:
        args = dep["dagsterApiGrpcArgs"]
        module = args[args.index("-m") + 1] if "-m" in args else None
        if module not in modules or module != dg["code_location_target_module"]:
            problems.append(f"user deployment {dep['name']}: module {module}; workspace.yaml has {sorted(modules)}, "
                            f"pyproject [tool.dg.project] {dg['code_location_target_module']}")
        if dep["name"] != dg["code_location_name"]:
            problems.append(f"user deployment {dep['name']}: pyproject names the location {dg['code_location_name']}")
    return problems


def dockerfile_instructions(text: str, keyword: str) -> list[str]:
    """The arguments of every ``keyword`` instruction, continuation lines joined."""
    logical = re.sub(r"\\\n", " ", text)
    return [m.group(1) for m in re.finditer(rf"^{keyword}\s+(.+)$", logical, re.M)]
