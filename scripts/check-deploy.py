#!/usr/bin/env python3
"""Checks the deployment files in deploy/ against each other and against the binary.

    fleetscore worker --help > /tmp/w.txt
    fleetscore --help > /tmp/g.txt
    fleetscore ingest serve --help > /tmp/i.txt
    fleetscore aggregate run --help > /tmp/a.txt
    python3 scripts/check-deploy.py --worker-help /tmp/w.txt --global-help /tmp/g.txt \
        --command-help "ingest serve=/tmp/i.txt" --command-help "aggregate run=/tmp/a.txt"

Checks that:
- every YAML file under deploy/k8s parses, and every document has apiVersion, kind and
  metadata.name (and metadata.namespace = the Namespace defined there, when namespaced);
- every FLEETSCORE_* variable the manifests set (container env, and the Secret's keys) is one
  the binary reads (`[env: NAME=` in the help texts: the worker's for the worker Deployment,
  the help of the command a container runs when it is given with --command-help, the global
  one for other workloads; a secret the binary reads from the environment only, never as an
  option, counts when the command's help names it, as `ingest serve`'s does
  FLEETSCORE_KAFKA_PASSWORD; a Secret key must be known to one of them);
- every envFrom/secretKeyRef Secret and the TriggerAuthentication's secret keys exist;
- the ScaledObject's scaleTargetRef names a Deployment defined there, its authenticationRef
  a TriggerAuthentication defined there, and its query uses only tables the PostgreSQL
  coordinator creates and is the coordinator's own QUEUE_DEPTH_SQL (what `fleetscore
  autoscale` counts);
- the image files (deploy/Containerfile, which scripts/image builds and the container tests
  run, and deploy/Dockerfile, the same image built from source) end in a `FROM scratch` stage
  with ENTRYPOINT fleetscore and the same numeric non-root USER;
- every container in the manifests runs that image (`fleetscore:VERSION`, the name
  scripts/image gives it, VERSION from Cargo.toml) as that user (runAsUser/runAsGroup), with
  the settings the container tests run it with: a read-only root file system with /tmp
  mounted writable, and no command of its own (the image has no shell: only fleetscore's
  arguments);
- a worker's FLEETSCORE_WORKER_DRAIN is shorter than its pod's termination grace period.

Needs PyYAML. Exits 0 with a one-line summary, 1 with the problems listed.
"""
import argparse
import json
import re
import shlex
import sys
from pathlib import Path

try:
    import yaml
except ImportError:
    sys.exit("check-deploy: needs PyYAML (pip install pyyaml, or use .venv/test/bin/python)")

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
IMAGE_FILES = [ROOT / "deploy" / "Containerfile", ROOT / "deploy" / "Dockerfile"]
CARGO_TOML = ROOT / "Cargo.toml"
POSTGRES_RS = ROOT / "crates" / "jobs" / "src" / "coordinator" / "postgres.rs"

# Kinds without a namespace (or not Kubernetes objects at all).
CLUSTER_KINDS = {"Namespace", "Kustomization", "ClusterTriggerAuthentication"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}


def env_names(help_file, mentioned=False):
    """The variables a help text declares (`[env: NAME=`); with `mentioned`, also those it
    names in its prose (secrets read from the environment only)."""
    text = Path(help_file).read_text()
    names = set(re.findall(r"\[env: ([A-Z0-9_]+)=", text))
    if not names:
        raise SystemExit(f"check-deploy: no `[env: NAME=` in {help_file}: is it `--help` output?")
    if mentioned:
        names |= set(re.findall(r"\b(FLEETSCORE_[A-Z0-9_]+)\b", text))
    return names


def pod_spec(doc):
    spec = doc.get("spec") or {}
    if doc["kind"] == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    return ((spec.get("template") or {}).get("spec")) or {}


def containers(doc):
    spec = pod_spec(doc)
    return (spec.get("initContainers") or []) + (spec.get("containers") or [])


def final_stage(dockerfile):
    """The last FROM stage: (its base, its instructions as (keyword, argument)), continuations
    joined."""
    lines, current = [], ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        lines.append(current + line)
        current = ""
    stages = []
    for line in lines:
        keyword, _, arg = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append((arg.split()[0] if arg.split() else "", []))
        elif stages:
            stages[-1][1].append((keyword.upper(), arg.strip()))
    return stages[-1] if stages else None


def workspace_version():
    m = re.search(r'^\[workspace\.package\][^\[]*?^version = "([^"]+)"', CARGO_TOML.read_text(), re.M | re.S)
    return m.group(1) if m else None


def exec_form(arg):
    try:
        value = json.loads(arg)
        if isinstance(value, list):
            return [str(v) for v in value]
    except ValueError:
        pass
    return shlex.split(arg)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker-help", required=True, help="output of `fleetscore worker --help`")
    ap.add_argument("--global-help", required=True, help="output of `fleetscore --help`")
    ap.add_argument("--command-help", action="append", default=[], metavar="COMMAND=FILE",
                    help="output of `fleetscore COMMAND --help`, for containers whose args start with COMMAND")
    args = ap.parse_args()
    global_env = env_names(args.global_help)
    worker_env = env_names(args.worker_help) | global_env
    command_env = {}
    for spec in args.command_help:
        command, _, path = spec.partition("=")
        command_env[tuple(command.split())] = env_names(path, mentioned=True) | global_env
    every_env = worker_env.union(*command_env.values())

    problems = []
    docs = []  # (file name, document)
    files = sorted(p for p in K8S.rglob("*") if p.suffix in (".yaml", ".yml"))
    if not files:
        problems.append(f"no YAML files under {K8S.relative_to(ROOT)}")
    for path in files:
        rel = path.relative_to(ROOT)
        try:
            loaded = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as e:
            problems.append(f"{rel}: does not parse: {' '.join(str(e).split())}")
            continue
        for i, doc in enumerate(loaded):
            if doc is None:
                continue
            where = f"{rel} (document {i + 1})"
            if not isinstance(doc, dict):
                problems.append(f"{where}: not a mapping")
                continue
            missing = [k for k in ("apiVersion", "kind") if not doc.get(k)]
            if not (doc.get("metadata") or {}).get("name"):
                missing.append("metadata.name")
            if missing:
                problems.append(f"{where}: no {', '.join(missing)}")
                continue
            docs.append((rel, doc))

    def named(kind):
        return {d["metadata"]["name"]: (rel, d) for rel, d in docs if d["kind"] == kind}

    namespaces = named("Namespace")
    secrets = named("Secret")
    deployments = named("Deployment")
    trigger_auths = named("TriggerAuthentication")

    # Namespaces: every namespaced object in the one Namespace defined.
    if len(namespaces) == 1:
        (ns,) = namespaces
        for rel, d in docs:
            if d["kind"] not in CLUSTER_KINDS and d["metadata"].get("namespace") != ns:
                problems.append(
                    f"{rel}: {d['kind']} {d['metadata']['name']} is not in namespace {ns}"
                )

    # Secret keys: FLEETSCORE_* ones must be known (they reach the worker through envFrom).
    secret_keys = {}
    checked_vars = set()
    for name, (rel, d) in secrets.items():
        keys = set(d.get("stringData") or {}) | set(d.get("data") or {})
        secret_keys[name] = keys
        for key in sorted(k for k in keys if k.startswith("FLEETSCORE_")):
            checked_vars.add(key)
            if key not in every_env:
                problems.append(f"{rel}: Secret key {key} is not an option of fleetscore")

    # Workloads: env names, and the Secrets they reference.
    for rel, d in docs:
        if d["kind"] not in WORKLOAD_KINDS:
            continue
        is_worker = d["kind"] == "Deployment"
        known = worker_env if is_worker else global_env
        help_name = "fleetscore worker --help" if is_worker else "fleetscore --help"
        for c in containers(d):
            where = f"{rel}: {d['kind']} {d['metadata']['name']}, container {c.get('name')}"
            # The help of the command the container runs, when given.
            run_args = [str(a) for a in c.get("args") or []]
            commands = [k for k in command_env if tuple(run_args[: len(k)]) == k]
            c_known, c_help = known, help_name
            if commands:
                command = max(commands, key=len)
                c_known, c_help = command_env[command], f"fleetscore {' '.join(command)} --help"
            for e in c.get("env") or []:
                name = e.get("name", "")
                if name.startswith("FLEETSCORE_"):
                    checked_vars.add(name)
                    if name not in c_known:
                        problems.append(f"{where}: {name} is not in `{c_help}`")
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref and ref.get("name") in secret_keys and ref.get("key") not in secret_keys[ref["name"]]:
                    problems.append(f"{where}: Secret {ref['name']} has no key {ref.get('key')}")
            for src in c.get("envFrom") or []:
                ref = (src.get("secretRef") or {}).get("name")
                if ref and ref not in secrets:
                    problems.append(f"{where}: envFrom names Secret {ref}, not defined here")

    # KEDA.
    table_names = set(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", POSTGRES_RS.read_text()))
    # The coordinator's own queue-depth statement, so KEDA counts what `fleetscore autoscale` counts.
    depth = re.search(r'pub const QUEUE_DEPTH_SQL: &str = "(.*?)";', POSTGRES_RS.read_text(), re.S)
    depth_sql = " ".join(depth.group(1).replace("\\\n", " ").split()) if depth else None
    if depth_sql is None:
        problems.append(f"{POSTGRES_RS.relative_to(ROOT)}: no QUEUE_DEPTH_SQL constant")
    scaled = named("ScaledObject")
    if not scaled:
        problems.append("no ScaledObject")
    for name, (rel, d) in scaled.items():
        spec = d.get("spec") or {}
        target = spec.get("scaleTargetRef") or {}
        if target.get("kind", "Deployment") != "Deployment" or target.get("name") not in deployments:
            problems.append(
                f"{rel}: ScaledObject {name} targets {target.get('kind', 'Deployment')} "
                f"{target.get('name')}, not a Deployment defined here ({', '.join(deployments) or 'none'})"
            )
        for t in spec.get("triggers") or []:
            auth = (t.get("authenticationRef") or {}).get("name")
            if auth and auth not in trigger_auths:
                problems.append(f"{rel}: trigger uses TriggerAuthentication {auth}, not defined here")
            query = (t.get("metadata") or {}).get("query", "")
            if t.get("type") == "postgresql" and depth_sql and " ".join(query.split()) != depth_sql:
                problems.append(
                    f"{rel}: the trigger's query is not the coordinator's QUEUE_DEPTH_SQL ({depth_sql})"
                )
            for table in sorted(set(re.findall(r"\bfleetscore_\w+", query)) - table_names):
                problems.append(
                    f"{rel}: query uses table {table}; the coordinator creates {sorted(table_names)}"
                )
    for name, (rel, d) in trigger_auths.items():
        for ref in (d.get("spec") or {}).get("secretTargetRef") or []:
            if ref.get("name") not in secret_keys:
                problems.append(f"{rel}: TriggerAuthentication {name} reads Secret {ref.get('name')}, not defined here")
            elif ref.get("key") not in secret_keys[ref["name"]]:
                problems.append(f"{rel}: TriggerAuthentication {name}: Secret {ref['name']} has no key {ref.get('key')}")

    # The image files: the same final stage, FROM scratch, fleetscore as PID 1, a numeric user.
    entrypoint, image_user = None, None
    for path in IMAGE_FILES:
        rel = path.relative_to(ROOT)
        stage = final_stage(path) if path.exists() else None
        if stage is None:
            problems.append(f"{rel}: missing or no FROM")
            continue
        base, instructions = stage
        if base != "scratch":
            problems.append(f"{rel}: final stage is FROM {base}, not FROM scratch")
        eps = [exec_form(a) for k, a in instructions if k == "ENTRYPOINT"]
        ep = eps[-1] if eps else None
        if not ep or Path(ep[0]).name != "fleetscore":
            problems.append(f"{rel}: final stage's ENTRYPOINT is {ep}, not fleetscore")
        users = [a for k, a in instructions if k == "USER"]
        user = users[-1] if users else None
        if not user or not re.fullmatch(r"[1-9][0-9]*:[0-9]+", user):
            problems.append(f"{rel}: final stage's USER is {user}, not a numeric non-root uid:gid")
        if entrypoint is None:
            entrypoint, image_user = ep, user
        elif (ep, user) != (entrypoint, image_user):
            problems.append(
                f"{rel}: ENTRYPOINT {ep} USER {user} differ from {IMAGE_FILES[0].relative_to(ROOT)}'s "
                f"({entrypoint}, {image_user})"
            )

    # The manifests run that image, as its user, with the tests' settings.
    version = workspace_version()
    if version is None:
        problems.append("Cargo.toml: no version in [workspace.package]")
    image = f"fleetscore:{version}"
    uid, gid = (image_user.split(":") + [None])[:2] if image_user else (None, None)
    for rel, d in docs:
        if d["kind"] not in WORKLOAD_KINDS:
            continue
        spec = pod_spec(d)
        pod_security = spec.get("securityContext") or {}
        mounts_tmp = {v.get("name") for v in spec.get("volumes") or [] if "emptyDir" in v}
        for c in containers(d):
            where = f"{rel}: {d['kind']} {d['metadata']['name']}, container {c.get('name')}"
            if c.get("image") != image:
                problems.append(f"{where}: image {c.get('image')}, not {image} (scripts/image's name)")
            if c.get("command"):
                problems.append(f"{where}: has a command ({c['command']}); the image has no shell, give args only")
            security = {**pod_security, **(c.get("securityContext") or {})}
            for key, want in (("runAsUser", uid), ("runAsGroup", gid)):
                if want is not None and str(security.get(key)) != want:
                    problems.append(f"{where}: {key} {security.get(key)}, not the image's {want}")
            if security.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem is not true (the container tests run --read-only)")
            if not any(m.get("mountPath") == "/tmp" and m.get("name") in mounts_tmp for m in c.get("volumeMounts") or []):
                problems.append(f"{where}: no emptyDir mounted on /tmp (the tests give it a tmpfs)")
        if d["kind"] == "Deployment":
            grace = spec.get("terminationGracePeriodSeconds", 30)
            for c in containers(d):
                drain = next((e.get("value") for e in c.get("env") or [] if e.get("name") == "FLEETSCORE_WORKER_DRAIN"), None)
                if drain is None:
                    problems.append(f"{rel}: container {c.get('name')} sets no FLEETSCORE_WORKER_DRAIN")
                elif not str(drain).isdigit() or int(drain) >= int(grace):
                    problems.append(
                        f"{rel}: FLEETSCORE_WORKER_DRAIN {drain} is not below terminationGracePeriodSeconds {grace}"
                    )

    if problems:
        print(f"check-deploy: {len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(
        f"check-deploy: OK: {len(docs)} documents in {len(files)} files; "
        f"{len(checked_vars)} FLEETSCORE_* variables known to the binary "
        f"({', '.join(sorted(checked_vars))}); "
        f"ScaledObject -> Deployment {', '.join(deployments)}; "
        f"image {image} FROM scratch, ENTRYPOINT {json.dumps(entrypoint)}, USER {image_user}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
