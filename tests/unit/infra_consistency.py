"""Consistency between the files of ``infra/`` (images, ports, names, the training Job's topology) and the
Dockerfile's promises to the Makefile; each ``check_*`` returns its problems (see ``infra_contract``)."""

from __future__ import annotations

import re

from tests.unit.infra_contract import REPO, Container, Infra, config_map, containers, dockerfile_instructions


# -- consistency between the files -------------------------------------------------------------------------
def _flag(argv: list[str], name: str) -> list[str]:
    """Values of ``--name=V`` / ``--name V`` in argv."""
    out = []
    for i, a in enumerate(argv):
        if a.startswith(name + "="):
            out.append(a.split("=", 1)[1])
        elif a == name and i + 1 < len(argv):
            out.append(argv[i + 1])
    return out


def project_image(infra: Infra) -> str:
    img = infra.values["dagster-user-deployments"]["deployments"][0]["image"]
    return f"{img['repository']}:{img['tag']}"


def check_images(infra: Infra) -> list[str]:
    repo, tag = project_image(infra).split(":")
    problems = []
    for c in containers(infra):
        image = c.spec["image"]
        if not image.startswith(f"{repo}:{tag}"):   # the same build (the trainer may use its -cuda variant)
            problems.append(f"{c.where}: image {image}, the Dagster user code runs {repo}:{tag}")
    return problems


def check_mlflow(infra: Infra) -> list[str]:
    svc, dep = infra.one("Service", "mlflow"), infra.one("Deployment", "mlflow")
    if svc is None or dep is None:
        return ["mlflow.yaml: Service and Deployment named mlflow expected"]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    argv = c["command"] + c["args"]
    port = int((_flag(argv, "--port") or _flag(argv, "-p") or ["5000"])[0])
    problems = []
    if [p["port"] for p in svc["spec"]["ports"]] != [port]:
        problems.append(f"Service mlflow ports {svc['spec']['ports']} != --port {port}")
    if [p["containerPort"] for p in c["ports"]] != [port]:
        problems.append(f"mlflow containerPort != --port {port}")
    if svc["spec"]["selector"].items() > dep["spec"]["template"]["metadata"]["labels"].items():
        problems.append("Service mlflow selects no mlflow pod")
    uri = config_map(infra).get("MLFLOW_TRACKING_URI", "")
    if uri != f"http://mlflow:{port}":
        problems.append(f"MLFLOW_TRACKING_URI={uri}: the server is http://mlflow:{port}")
    if not all(u.startswith("s3://") for u in _flag(argv, "--artifacts-destination")) or \
            not _flag(argv, "--artifacts-destination"):
        problems.append("mlflow server: --artifacts-destination s3://... expected")
    backend = (_flag(argv, "--backend-store-uri") or [""])[0]
    pg = infra.values["postgresql"]
    m = re.fullmatch(r"postgresql://([^:@/]+)@([^:/]+):(\d+)/\w+", backend)
    if m is None:   # no password in the URI: PGPASSWORD from the Secret
        problems.append(f"--backend-store-uri {backend}: postgresql://USER@HOST:PORT/DB expected")
    elif (m.group(2), int(m.group(3))) != (pg["postgresqlHost"], pg["service"]["port"]):
        problems.append(f"MLflow's PostgreSQL {m.group(2)}:{m.group(3)} is not Dagster's "
                        f"{pg['postgresqlHost']}:{pg['service']['port']}")
    secret = infra.values["global"]["postgresqlSecretName"]
    refs = [e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env") or [] if e["name"] == "PGPASSWORD"]
    if refs != [secret]:
        problems.append(f"mlflow PGPASSWORD from {refs}, Dagster's password Secret is {secret}")
    return problems


def check_training_job(infra: Infra) -> list[str]:
    jobs = [j for j in infra.objects("Job") if j["spec"].get("completionMode") == "Indexed"]
    if not jobs:
        return ["no Indexed Job"]
    problems = []
    home = config_map(infra).get("FGCLIP_HOME", "")
    for job in jobs:
        name, spec = job["metadata"]["name"], job["spec"]
        pod = spec["template"]["spec"]
        svc = infra.one("Service", pod.get("subdomain", ""))
        if svc is None or svc["spec"].get("clusterIP") != "None" or svc["spec"]["selector"] != {"job-name": name}:
            problems.append(f"Job {name}: subdomain {pod.get('subdomain')} is not a headless Service selecting it")
        c = Container(f"Job/{name}", pod["containers"][0], pod)
        argv = c.argv
        nnodes = _flag(argv, "--nnodes")
        if nnodes != [str(spec["completions"])] or spec["completions"] != spec["parallelism"]:
            problems.append(f"Job {name}: --nnodes {nnodes}, completions {spec['completions']}, "
                            f"parallelism {spec['parallelism']} must be equal")
        if _flag(argv, "--master_addr") != [f"{name}-0.{pod.get('subdomain')}"]:
            problems.append(f"Job {name}: --master_addr {_flag(argv, '--master_addr')} is not pod 0's DNS name")
        rank_env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in c.spec.get("env")
                    or []}
        rank = _flag(argv, "--node_rank")
        var = re.fullmatch(r"\$\((\w+)\)", rank[0]) if rank else None
        if var is None or "job-completion-index" not in (rank_env.get(var.group(1)) or ""):
            problems.append(f"Job {name}: --node_rank {rank} is not the pod's completion index")
        if svc is not None and [str(p["port"]) for p in svc["spec"]["ports"]] != _flag(argv, "--master_port"):
            problems.append(f"Job {name}: --master_port {_flag(argv, '--master_port')} is not the Service's port")
        gpus = str(c.spec["resources"]["limits"].get("nvidia.com/gpu", ""))
        if _flag(argv, "--nproc_per_node") != [gpus]:
            problems.append(f"Job {name}: --nproc_per_node {_flag(argv, '--nproc_per_node')} != nvidia.com/gpu {gpus}")
        if "DS_ACCELERATOR" in c.env_names:
            problems.append(f"Job {name}: DS_ACCELERATOR set; leave it unset on GPU nodes")
        data = _flag(argv, "--data")
        if not data or not all(d.startswith("s3://") for d in data):
            problems.append(f"Job {name}: --data {data}: shards on s3:// expected")
        mounts = {m["mountPath"]: m["name"] for m in c.spec.get("volumeMounts") or []}
        claims = {v["name"]: (v.get("persistentVolumeClaim") or {}).get("claimName") for v in pod.get("volumes") or []}
        shared = {pvc["metadata"]["name"] for pvc in infra.objects("PersistentVolumeClaim")
                  if "ReadWriteMany" in pvc["spec"]["accessModes"]}
        for out in _flag(argv, "--output"):
            if not out.startswith(home + "/") or claims.get(mounts.get(home, "")) not in shared:
                problems.append(f"Job {name}: --output {out} is not on the shared ReadWriteMany volume at {home}")
        if "--resume=latest" not in argv:
            problems.append(f"Job {name}: without --resume latest a retried pod starts over")
    return problems


def check_references(infra: Infra) -> list[str]:
    """Every ConfigMap / PVC a pod names is defined here (Secrets are created by hand: README)."""
    problems = []
    maps = {cm["metadata"]["name"]: cm.get("data") or {} for cm in infra.objects("ConfigMap")}
    claims = {p["metadata"]["name"] for p in infra.objects("PersistentVolumeClaim")}
    pods = [c.pod for c in containers(infra)]
    specs = [c.spec for c in containers(infra)]
    for spec in specs:
        for src in spec.get("envFrom") or []:
            if "configMapRef" in src and src["configMapRef"]["name"] not in maps:
                problems.append(f"envFrom ConfigMap {src['configMapRef']['name']} is not defined")
        for e in spec.get("env") or []:
            ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
            if ref and ref["key"] not in maps.get(ref["name"], {}):
                problems.append(f"{e['name']}: ConfigMap {ref['name']} has no key {ref['key']}")
    launcher = infra.values["runLauncher"]["config"]["k8sRunLauncher"]
    deps = infra.values["dagster-user-deployments"]["deployments"]
    for holder in [launcher, *deps]:
        for ref in holder.get("envConfigMaps") or []:
            if ref["name"] not in maps:
                problems.append(f"Dagster values: ConfigMap {ref['name']} is not defined")
        pods.append(holder)
    for pod in pods:
        for v in pod.get("volumes") or []:
            claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
            if claim and claim not in claims:
                problems.append(f"volume {v['name']}: PersistentVolumeClaim {claim} is not defined")
    return problems


# -- Dockerfile --------------------------------------------------------------------------------------------
def check_dockerfile(infra: Infra) -> list[str]:
    text, problems = infra.dockerfile, []
    ignored = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")]
    for line in dockerfile_instructions(text, "COPY"):
        *sources, _dest = line.split()
        for src in sources:
            if not (REPO / src).exists():
                problems.append(f"Dockerfile COPY {src}: no such file in the repository")
            if src.rstrip("/") in ignored:
                problems.append(f"Dockerfile COPY {src}: excluded by .dockerignore")
    make_wheel = re.search(r"^OPEN_CLIP_WHEEL\s*:=\s*(\S+)", (REPO / "Makefile").read_text(), re.M)
    docker_wheel = re.search(r"^ARG OPEN_CLIP_WHEEL=(\S+)", text, re.M)
    if not make_wheel or not docker_wheel or make_wheel.group(1) != docker_wheel.group(1):
        problems.append("Dockerfile OPEN_CLIP_WHEEL differs from the Makefile's")
    if 'pip install --no-deps "${OPEN_CLIP_WHEEL}"' not in text:
        problems.append("Dockerfile: the open_clip wheel must be installed with --no-deps (it pulls torchvision)")
    if re.search(r"(?<![-\w])torch==\d", text):
        problems.append("Dockerfile: torch pinned by hand; read the pin from pyproject.toml")
    if "pip install . " not in text and "pip install .\n" not in text:
        problems.append("Dockerfile: the project itself is not installed (pip install .)")
    if any("DS_ACCELERATOR" in line for line in dockerfile_instructions(text, "ENV")):
        problems.append("Dockerfile: ENV DS_ACCELERATOR would pin every container (GPU ones included)")
    return problems


def check_secrets(infra: Infra, readme: str | None = None) -> list[str]:
    """Every Secret (and key) a pod or the Dagster chart reads is one infra/README.md tells you to create."""
    text = readme if readme is not None else (REPO / "infra" / "README.md").read_text()
    created: dict[str, set[str]] = {}
    for m in re.finditer(r"create secret generic (\S+)((?:\s+\\?\s*--from-literal=\w[\w-]*=\S+)+)", text):
        created[m.group(1)] = set(re.findall(r"--from-literal=([\w-]+)=", m.group(2)))
    wanted: dict[str, set[str]] = {infra.values["global"]["postgresqlSecretName"]: {"postgresql-password"}}
    holders = [c.spec for c in containers(infra)]
    holders += [infra.values["runLauncher"]["config"]["k8sRunLauncher"],
                *infra.values["dagster-user-deployments"]["deployments"]]
    for h in holders:
        for ref in h.get("envSecrets") or []:
            wanted.setdefault(ref["name"], set())
        for src in h.get("envFrom") or []:
            if "secretRef" in src:
                wanted.setdefault(src["secretRef"]["name"], set())
        for e in h.get("env") or []:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                wanted.setdefault(ref["name"], set()).add(ref["key"])
    problems = []
    for name, keys in sorted(wanted.items()):
        if name not in created:
            problems.append(f"Secret {name} is read but infra/README.md does not create it")
        elif keys - created[name]:
            problems.append(f"Secret {name}: keys {sorted(keys - created[name])} are read but not created")
    return problems
