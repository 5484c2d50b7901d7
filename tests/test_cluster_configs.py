"""Static checks of cluster/: every command a config runs must exist and parse with today's CLIs.

Options are checked against the real parsers (the typer app's click commands, jobs.nightly's
argparse parser), so renaming or removing an option breaks these tests until the configs and
docs follow. No Kubernetes, AWS or Docker is needed.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import shlex
from pathlib import Path

import pytest
import typer.main
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
YAML_NAMES = ("kuberay-rayjob.yaml", "kuberay-raycluster.yaml", "ray-up-gpu.yaml", "nightly-cronjob.yaml")
CREDENTIAL_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "RAY_AUTH_TOKEN"}
GPU = "nvidia.com/gpu"


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------

def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pins() -> dict[str, str]:
    out = {}
    for dep in pyproject()["project"]["dependencies"]:
        m = re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^;\s]+)", dep)
        if m:
            out[m.group(1).lower()] = m.group(2)
    return out


def load_docs(path: Path) -> list[dict]:
    """Every YAML document of a file, plus the manifests embedded in ConfigMaps (*.yaml keys)."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for doc in list(docs):
        if doc.get("kind") == "ConfigMap":
            for key, text in (doc.get("data") or {}).items():
                if key.endswith((".yaml", ".yml")):
                    docs.extend(d for d in yaml.safe_load_all(text) if d is not None)
    return docs


def all_docs() -> dict[str, list[dict]]:
    return {name: load_docs(CLUSTER / name) for name in YAML_NAMES}


def walk(obj, key=None):
    """(key, value) for every value in a YAML tree, ConfigMap-embedded YAML strings excluded
    (load_docs parses those as documents of their own)."""
    if isinstance(obj, dict):
        if obj.get("kind") == "ConfigMap":
            obj = {k: v for k, v in obj.items() if k != "data"}
        for k, v in obj.items():
            yield from walk(v, k)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk(v, key)
    else:
        yield key, obj


def pod_specs(obj):
    if isinstance(obj, dict):
        if isinstance(obj.get("containers"), list):
            yield obj
        for v in obj.values():
            yield from pod_specs(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from pod_specs(v)


def ray_cluster_specs(doc: dict) -> list[dict]:
    if doc.get("kind") == "RayCluster":
        return [doc["spec"]]
    if doc.get("kind") == "RayJob":
        return [doc["spec"]["rayClusterSpec"]]
    return []


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (CLUSTER / "Dockerfile").read_text()
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            instr, _, rest = line.strip().partition(" ")
            out.append((instr.upper(), rest.strip()))
    return out


def readme_code() -> str:
    text = (CLUSTER / "README.md").read_text()
    return "\n".join(re.findall(r"```(?:bash|sh|shell)?\n(.*?)```", text, flags=re.S))


def yaml_comment_commands(path: Path) -> str:
    """The text of a YAML file's comments: the usage lines shown there are checked too."""
    out = []
    for line in path.read_text().splitlines():
        text = line.strip()
        if text.startswith("#"):
            out.append(text.lstrip("#").strip())
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# Commands: find `python -m MODULE ...` and `stylebatch ...` invocations in shell text
# ----------------------------------------------------------------------------------------------

_PUNCT = ";&|()"
_INTERESTING = re.compile(r"(^|[\s/])(stylebatch\s+[a-z]|python3?(\.\d+)?\s+-m\s)")


def _all_segments(text: str):
    lex = shlex.shlex(text, posix=True, punctuation_chars=_PUNCT)
    lex.whitespace_split = True
    seg: list[str] = []
    for tok in lex:
        if tok and set(tok) <= set(_PUNCT):
            if seg:
                yield seg
            seg = []
        else:
            seg.append(tok)
    if seg:
        yield seg


def shell_segments(text: str):
    """Token lists of the simple commands in ``text`` (continuations joined, split at ; && | etc.)."""
    for line in re.sub(r"\\\n", " ", text).splitlines():
        if not _INTERESTING.search(line):
            continue
        yield from _all_segments(line)


def invocations(text: str):
    """("module", name, args) for python -m; ("stylebatch", None, args) for the console script."""
    for seg in shell_segments(text):
        for i, tok in enumerate(seg):
            base = os.path.basename(tok)
            if re.fullmatch(r"python3?(\.\d+)?", base) and seg[i + 1:i + 2] == ["-m"] and len(seg) > i + 2:
                yield "module", seg[i + 2], seg[i + 3:]
                break
            if i == 0 and base == "stylebatch":
                yield "stylebatch", None, seg[1:]
                break


# Typer >= 0.29 vendors its own click (typer._click): duck-type instead of isinstance(click.X).
def _is_group(cmd) -> bool:
    return isinstance(getattr(cmd, "commands", None), dict)


def submit_command():
    from stylebatch.cli import app

    return typer.main.get_command(app).commands["submit"]


def option_names(cmd) -> set[str]:
    return {o for p in cmd.params if p.param_type_name == "option" for o in (*p.opts, *p.secondary_opts)}


def nightly_option_names() -> set[str]:
    from jobs.nightly import build_parser

    return {s for a in build_parser()._actions for s in a.option_strings}


def _used_options(args: list[str]) -> set[str]:
    return {a.split("=", 1)[0] for a in args if a.startswith("--") and a != "--"}


def _parse_click(cmd, prog: str, args: list[str]) -> None:
    unknown = sorted(_used_options(args) - option_names(cmd))
    assert not unknown, f"{prog}: options {unknown} do not exist (known: {sorted(option_names(cmd))})"
    try:
        cmd.make_context(prog, list(args), resilient_parsing=False)
    except Exception as exc:  # click's UsageError/BadParameter (vendored by typer)
        if not hasattr(exc, "format_message"):
            raise
        raise AssertionError(f"{prog} {shlex.join(args)}: {exc.format_message()}") from None


def check_invocation(kind: str, module: str | None, args: list[str]) -> None:
    """Raise AssertionError unless the command would start and parse its options."""
    if kind == "stylebatch":
        from stylebatch.cli import app

        cmd = typer.main.get_command(app)
        rest = list(args)
        while _is_group(cmd):
            assert rest and rest[0] in cmd.commands, f"stylebatch {shlex.join(args)}: unknown command"
            cmd = cmd.commands[rest.pop(0)]
        _parse_click(cmd, "stylebatch " + cmd.name, rest)
        return
    assert importlib.util.find_spec(module) is not None, f"python -m {module}: no such module"
    if not module.startswith("jobs."):
        return
    assert (ROOT / "jobs" / (module.split(".", 1)[1] + ".py")).is_file(), f"{module} is not a file under jobs/"
    importlib.import_module(module)
    if module == "jobs.restyle":
        _parse_click(submit_command(), "jobs.restyle", args)
    elif module == "jobs.nightly":
        unknown = sorted(_used_options(args) - nightly_option_names())
        assert not unknown, f"jobs.nightly: options {unknown} do not exist"
        from jobs.nightly import parse_args
        from stylebatch.config import JobConfig

        try:
            where, options = parse_args(args)
        except SystemExit:
            raise AssertionError(f"jobs.nightly {shlex.join(args)}: rejected by its parser") from None
        try:  # the value checks run_nightly does before any work
            JobConfig(manifest=where["manifest"] or "m.parquet", output=where["output"], **options).validate()
        except ValueError as exc:
            raise AssertionError(f"jobs.nightly {shlex.join(args)}: {exc}") from None
    else:
        raise AssertionError(f"{module}: no CLI check known for this entrypoint")


def config_invocations() -> dict[str, list[tuple]]:
    """Every invocation in every config value, YAML comment, README code block and Dockerfile."""
    found: dict[str, list[tuple]] = {}
    for name, docs in all_docs().items():
        items = []
        for doc in docs:
            for _key, value in walk(doc):
                if isinstance(value, str):
                    items.extend(invocations(value))
        items.extend(invocations(yaml_comment_commands(CLUSTER / name)))
        found[name] = items
    found["README.md"] = list(invocations(readme_code()))
    docker = []
    for instr, rest in dockerfile_instructions():
        if instr in ("RUN", "CMD", "ENTRYPOINT"):
            text = shlex.join(json.loads(rest)) if rest.startswith("[") else rest
            docker.extend(invocations(text))
    found["Dockerfile"] = docker
    return found


# ----------------------------------------------------------------------------------------------
# The checker itself must bite
# ----------------------------------------------------------------------------------------------

def test_checker_rejects_renamed_or_unknown_options():
    with pytest.raises(AssertionError, match="--max-side"):
        check_invocation("module", "jobs.restyle", ["m.parquet", "--max-side", "512"])
    with pytest.raises(AssertionError, match="--alpha"):  # exists, but the value is out of range
        check_invocation("module", "jobs.restyle", ["m.parquet", "--alpha", "3"])
    with pytest.raises(AssertionError, match="--styles"):
        check_invocation("module", "jobs.nightly", ["--source", "s3://b/c", "--output", "s3://b/o", "--styles", "x"])
    with pytest.raises(AssertionError, match="rejected"):  # --source and --manifest together
        check_invocation("module", "jobs.nightly", ["--source", "a", "--manifest", "b", "--output", "o"])
    with pytest.raises(AssertionError, match="--jpeg-quality"):
        check_invocation("module", "jobs.nightly", ["--source", "a", "--output", "o", "--jpeg-quality", "900"])
    with pytest.raises(AssertionError, match="no such module"):
        check_invocation("module", "jobs.does_not_exist", [])
    with pytest.raises(AssertionError, match="unknown command"):
        check_invocation("stylebatch", None, ["sumbit", "m.parquet"])
    check_invocation("module", "jobs.restyle", ["m.parquet", "--max-size", "512", "--format", "png"])
    assert list(invocations("ray job submit --working-dir . -- python -m jobs.nightly \\\n  --source s3://b/c")) == \
        [("module", "jobs.nightly", ["--source", "s3://b/c"])]


# ----------------------------------------------------------------------------------------------
# Entrypoints and commands
# ----------------------------------------------------------------------------------------------

def test_every_yaml_file_parses_and_names_its_objects():
    for name, docs in all_docs().items():
        assert docs, f"{name} is empty"
        for doc in docs:
            if name == "ray-up-gpu.yaml":
                continue
            assert doc.get("apiVersion") and doc.get("kind"), f"{name}: a document without apiVersion/kind"
            meta = doc.get("metadata") or {}
            assert meta.get("name") or meta.get("generateName"), f"{name}: {doc['kind']} without a name"
            assert meta.get("namespace") in (None, "stylebatch"), f"{name}: {doc['kind']} in another namespace"


def test_every_command_exists_and_parses():
    found = config_invocations()
    for where, items in found.items():
        for kind, module, args in items:
            try:
                check_invocation(kind, module, args)
            except AssertionError as exc:
                raise AssertionError(f"{where}: {exc}") from None
    modules = {name: {m for k, m, _ in items if k == "module"} for name, items in found.items()}
    assert modules["kuberay-rayjob.yaml"] == {"jobs.restyle"}
    assert "jobs.nightly" in modules["nightly-cronjob.yaml"]
    assert "jobs.nightly" in modules["README.md"]
    assert any(k == "stylebatch" and a[:1] == ["submit"] for k, _, a in found["README.md"])


def test_ray_job_entrypoints_are_jobs_modules():
    for name, docs in all_docs().items():
        for doc in docs:
            if doc.get("kind") != "RayJob":
                continue
            entry = doc["spec"]["entrypoint"]
            parsed = list(invocations(entry))
            assert len(parsed) == 1 and parsed[0][0] == "module" and parsed[0][1].startswith("jobs."), \
                f"{name}: entrypoint must be `python -m jobs.<name> ...`, got {entry!r}"


# ----------------------------------------------------------------------------------------------
# KubeRay
# ----------------------------------------------------------------------------------------------

def _gpu_limit(container: dict) -> float:
    return float(((container.get("resources") or {}).get("limits") or {}).get(GPU, 0))


def test_ray_clusters_have_a_cpu_head_and_gpu_workers():
    import ray

    seen = 0
    for name, docs in all_docs().items():
        for doc in docs:
            for spec in ray_cluster_specs(doc):
                seen += 1
                assert spec["rayVersion"] == ray.__version__ == pins()["ray"], f"{name}: rayVersion"
                assert (spec.get("authOptions") or {}).get("mode") == "token", f"{name}: token auth off"
                head = spec["headGroupSpec"]["template"]["spec"]["containers"]
                assert all(_gpu_limit(c) == 0 for c in head), f"{name}: the head should not hold a GPU"
                groups = spec["workerGroupSpecs"]
                gpu_groups = [g for g in groups
                              if any(_gpu_limit(c) >= 1 for c in g["template"]["spec"]["containers"])]
                assert gpu_groups, f"{name}: no worker group requests {GPU}"
                for g in gpu_groups:
                    for c in g["template"]["spec"]["containers"]:
                        req = ((c.get("resources") or {}).get("requests") or {}).get(GPU)
                        assert req in (None, c["resources"]["limits"][GPU]), f"{name}: GPU request != limit"
                    assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], f"{name}: replica bounds"
                if doc["kind"] == "RayCluster":
                    assert spec.get("enableInTreeAutoscaling") is True, f"{name}: autoscaling off"
                    assert any(g["minReplicas"] == 0 for g in gpu_groups), f"{name}: GPU workers never scale to 0"
    assert seen == 3  # the RayJob, the RayCluster and the nightly RayJob


def test_ray_jobs_clean_up_after_themselves():
    jobs = [(n, d) for n, docs in all_docs().items() for d in docs if d.get("kind") == "RayJob"]
    assert {n for n, _ in jobs} == {"kuberay-rayjob.yaml", "nightly-cronjob.yaml"}
    for name, job in jobs:
        spec = job["spec"]
        assert spec["shutdownAfterJobFinishes"] is True, name
        assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0, name
        assert spec.get("activeDeadlineSeconds", 0) > 0, f"{name}: a stuck job would hold GPUs forever"


def test_credentials_and_images_come_from_secrets():
    text = "\n".join((CLUSTER / n).read_text() for n in (*YAML_NAMES, "README.md", "Dockerfile"))
    assert not re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text), "an AWS access key id is written in cluster/"
    assert not re.search(r"(?i)(secret|password|token)[\w-]*[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+]{24,}", text), \
        "something that looks like a secret value is written in cluster/"
    images = set()
    for name, docs in all_docs().items():
        for doc in docs:
            for pod in pod_specs(doc):
                ours = [c for c in pod["containers"] if "stylebatch" in c["image"]]
                for c in pod["containers"]:
                    assert ":" in c["image"].rsplit("/", 1)[-1] and not c["image"].endswith(":latest"), \
                        f"{name}: image {c['image']} is not pinned to a tag"
                if ours:
                    assert pod.get("imagePullSecrets"), f"{name}: private image pulled without imagePullSecrets"
                    images.update(c["image"] for c in ours)
                for c in pod["containers"]:
                    env = {e["name"]: e for e in c.get("env") or []}
                    for var in CREDENTIAL_ENV & set(env):
                        assert "value" not in env[var], f"{name}: {var} is inlined"
                        assert env[var]["valueFrom"]["secretKeyRef"]["name"], f"{name}: {var} not from a Secret"
                    if c["name"] in ("ray-head", "ray-worker"):
                        # Every Ray node reads and writes S3.
                        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env), \
                            f"{name}: {c['name']} has no S3 credentials"
    assert len(images) == 1, f"the configs disagree on the image: {sorted(images)}"
    # The README's setup creates every Secret the configs reference.
    readme = (CLUSTER / "README.md").read_text()
    refs = {v["name"] for docs in all_docs().values() for d in docs for k, v in walk_dicts(d, "secretKeyRef")}
    refs |= {s["name"] for docs in all_docs().values() for d in docs for p in pod_specs(d)
             for s in p.get("imagePullSecrets") or []}
    assert refs == {"stylebatch-aws", "stylebatch-registry"}
    for secret in refs:
        assert re.search(rf"create secret \S+ {secret}\b", readme), f"README does not say how to create {secret}"


def walk_dicts(obj, wanted: str):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == wanted and isinstance(v, dict):
                yield k, v
            yield from walk_dicts(v, wanted)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk_dicts(v, wanted)


# ----------------------------------------------------------------------------------------------
# Nightly CronJob
# ----------------------------------------------------------------------------------------------

def test_nightly_cronjob_is_scheduled_exclusive_and_wired_to_its_rayjob():
    docs = yaml.safe_load_all((CLUSTER / "nightly-cronjob.yaml").read_text())
    by_kind = {d["kind"]: d for d in docs if d}
    cron = by_kind["CronJob"]["spec"]
    fields = cron["schedule"].split()
    assert len(fields) == 5 and all(re.fullmatch(r"[\d*/,-]+", f) for f in fields), cron["schedule"]
    assert cron["concurrencyPolicy"] == "Forbid"
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    script = " ".join(pod["containers"][0]["command"] + pod["containers"][0]["args"])
    m = re.search(r"kubectl create -f (\S+)", script)
    assert m, "the CronJob does not create the RayJob"
    mount = next(vm for vm in pod["containers"][0]["volumeMounts"] if m.group(1).startswith(vm["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    cm = by_kind["ConfigMap"]
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    key = m.group(1)[len(mount["mountPath"]) + 1:]
    rayjob = yaml.safe_load(cm["data"][key])
    assert rayjob["kind"] == "RayJob" and rayjob["metadata"].get("generateName")
    assert list(invocations(rayjob["spec"]["entrypoint"]))[0][1] == "jobs.nightly"
    # The launcher may create the RayJobs it waits for.
    assert pod["serviceAccountName"] == by_kind["ServiceAccount"]["metadata"]["name"]
    rule = next(r for r in by_kind["Role"]["rules"] if "rayjobs" in r["resources"])
    assert {"create", "get"} <= set(rule["verbs"]) and "ray.io" in rule["apiGroups"]
    binding = by_kind["RoleBinding"]
    assert binding["roleRef"]["name"] == by_kind["Role"]["metadata"]["name"]
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"]


# ----------------------------------------------------------------------------------------------
# ray up
# ----------------------------------------------------------------------------------------------

def test_ray_up_config_is_complete_and_valid():
    cfg = yaml.safe_load((CLUSTER / "ray-up-gpu.yaml").read_text())
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type", "max_workers"):
        assert key in cfg, f"ray-up-gpu.yaml: missing {key}"
    assert cfg["provider"]["type"] == "aws"
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    head = types[cfg["head_node_type"]]
    workers = {k: v for k, v in types.items() if k != cfg["head_node_type"]}
    gpu_families = ("g4dn.", "g5.", "g6.", "g6e.", "p3.", "p4d.", "p5.")
    assert not head["node_config"]["InstanceType"].startswith(gpu_families), "the head should not be a GPU node"
    assert head.get("resources", {}).get("CPU") == 0
    assert any(w["node_config"]["InstanceType"].startswith(gpu_families) for w in workers.values())
    assert all(w["max_workers"] <= cfg["max_workers"] for w in workers.values())
    # The project reaches the nodes and is installed there, with the pinned torch.
    mounts = {remote: local for remote, local in cfg["file_mounts"].items()}
    project_remote = next(r for r, local in mounts.items() if (ROOT / local).resolve() == ROOT)
    setup = "\n".join(cfg["setup_commands"])
    assert re.search(rf"pip install .*(-e )?{re.escape(project_remote)}\b", setup), "the project is not installed"
    p = pins()
    assert f"torch=={p['torch']}" in setup and f"torchvision=={p['torchvision']}" in setup
    assert ".venv" in cfg["rsync_exclude"]
    # What `ray up` itself checks: its defaults merged in, then its JSON schema.
    util = pytest.importorskip("ray.autoscaler._private.util")
    pytest.importorskip("jsonschema")
    util.validate_config(util.prepare_config(cfg))


# ----------------------------------------------------------------------------------------------
# Dockerfile
# ----------------------------------------------------------------------------------------------

def test_dockerfile_installs_the_project_with_pinned_torch():
    instrs = dockerfile_instructions()
    args = {}
    for instr, rest in instrs:
        if instr == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            args[k] = v
    p = pins()
    assert args["TORCH_VERSION"] == p["torch"] and args["TORCHVISION_VERSION"] == p["torchvision"]
    # torch's CUDA build (cu130 = CUDA 13.0) and the base image's CUDA must agree.
    cuda_tag = re.search(r"/whl/cu(\d+)(\d)$", args["TORCH_INDEX"])
    assert cuda_tag, args["TORCH_INDEX"]
    base = next(rest for instr, rest in instrs if instr == "FROM")
    assert re.match(rf"nvidia/cuda:{cuda_tag.group(1)}\.{cuda_tag.group(2)}\.\d+-(cudnn-)?runtime-", base), base
    runs = [rest for instr, rest in instrs if instr == "RUN"]
    assert any('--index-url "${TORCH_INDEX}"' in r and '"torch==${TORCH_VERSION}"' in r for r in runs)
    assert any("pyproject.toml" in r and "pip install -r" in r for r in runs), "pyproject's pins are not installed"
    installs_project = False
    for r in runs:
        for seg in _all_segments(r):
            if seg[:2] == ["pip", "install"] and "." in seg[2:]:
                installs_project = True
    assert installs_project, "the Dockerfile never runs `pip install .`"
    copies = {rest.split()[0] for instr, rest in instrs if instr == "COPY"}
    assert {"pyproject.toml", "stylebatch", "jobs"} <= copies
    assert any(instr == "WORKDIR" for instr, _ in instrs)
    # The image can run both entrypoints: the build imports them.
    assert any("jobs.restyle" in r and "jobs.nightly" in r for r in runs)

