#!/usr/bin/env python3
"""Checks of deploy/ that no schema makes: the names the daemon really reads and exports,
and values that must agree across files. Run by scripts/check-deploy.sh, in its venv
(PyYAML); needs nothing else and no network.

    check_deploy.py env-names          every env var the deploy files set is read by the daemon
    check_deploy.py metrics            every metric alerts and dashboard use is exported
    check_deploy.py consistency        timeouts, sizes, names and references agree
    check_deploy.py dashboard-rules F  writes the dashboard's queries as a rule file for promtool
    check_deploy.py check-config BIN   runs `BIN check-config` with each deployment's settings
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SERVER_SRC = ROOT / "ingest-server" / "src"

# postgres_exporter names the rules and dashboard use (collector/pg_replication.go, and
# pg_up from the exporter itself); not exported by the daemon.
POSTGRES_EXPORTER = {"pg_up", "pg_replication_lag_seconds", "pg_replication_is_replica"}

errors: list[str] = []


def error(msg: str) -> None:
    errors.append(msg)
    print(f"  error: {msg}")


def ok(msg: str, since: int | None = None) -> None:
    """Prints msg unless errors were found after the error count `since`."""
    if since is None or len(errors) == since:
        print(f"  ok: {msg}")


class CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation YAML: `!Ref X` becomes {"Ref": X}, and so on."""


def _cfn_tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        return {suffix: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {suffix: loader.construct_sequence(node, deep=True)}
    return {suffix: loader.construct_mapping(node, deep=True)}


CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def load_all(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def compose() -> dict:
    return load_yaml(DEPLOY / "docker-compose.prod.yml")


def cfn() -> dict:
    return yaml.load((DEPLOY / "aws" / "christmas-ecs.yaml").read_text(), Loader=CfnLoader)


def k8s_docs() -> list:
    docs = []
    for f in sorted((DEPLOY / "k8s").glob("*.yaml")):
        if f.name != "kustomization.yaml":
            docs += [(f.name, d) for d in load_all(f)]
    return docs


def k8s_find(kind: str, name: str) -> dict | None:
    for _, d in k8s_docs():
        if d["kind"] == kind and d["metadata"]["name"] == name:
            return d
    return None


def ecs_containers() -> list[dict]:
    out = []
    for res in cfn()["Resources"].values():
        if res["Type"] == "AWS::ECS::TaskDefinition":
            out += res["Properties"]["ContainerDefinitions"]
    return out


def toml_settings() -> dict:
    return tomllib.loads((DEPLOY / "config" / "christmas.toml").read_text())


# ---- env-names ----------------------------------------------------------------------------


def config_env_names() -> set[str]:
    """The env names `christmas_ingest::config::sources` derives from DaemonConfig's keys:
    CHRISTMAS_<TABLE>_<KEY> for a key of a `*Settings` table, CHRISTMAS_<KEY> at the top,
    the PLAIN_ENV URLs without the prefix, and the old names OLD_ENV still reads."""
    config = SERVER_SRC / "config"
    fields = lambda body: re.findall(r"^\s*pub (\w+): ([\w<>]+),", body, re.M)
    structs = dict(re.findall(r"pub struct (\w+) \{(.*?)^\}", (config / "sections.rs").read_text()
                              + (config / "mod.rs").read_text(), re.M | re.S))
    sources = (config / "sources.rs").read_text()
    plain = re.search(r"PLAIN_ENV: &\[&str\] = &\[(.*?)\];", sources, re.S).group(1)
    plain = set(re.findall(r'"(\w+)"', plain))
    old = re.search(r"OLD_ENV: .*? = &\[(.*?)\];", sources, re.S).group(1)
    names = set(re.findall(r'\("([A-Z0-9_]+)"', old))
    for key, ty in fields(structs["DaemonConfig"]):
        if ty in structs:
            names |= {f"CHRISTMAS_{key}_{k}".upper() for k, _ in fields(structs[ty])}
        else:
            names.add(key.upper() if key in plain else f"CHRISTMAS_{key.upper()}")
    return names


def daemon_env_names() -> set[str]:
    """Env vars christmas-ingest reads: config keys, other `var(...)` reads, clap
    `env = ...`, RUST_LOG, and its allocator's MIMALLOC_ALLOW_THP."""
    names = {"RUST_LOG", "MIMALLOC_ALLOW_THP"} | config_env_names()
    for f in SERVER_SRC.rglob("*.rs"):
        text = f.read_text()
        names |= set(re.findall(r'\bvar\("([A-Z0-9_]+)"\)', text))
        names |= set(re.findall(r'\benv\s*=\s*"([A-Z0-9_]+)"', text))
    return names


def third_party(d: dict) -> bool:
    """A manifest of a server the daemon uses (RabbitMQ), not of the daemon itself."""
    return d["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "rabbitmq"


def deploy_env_names() -> dict[str, set[str]]:
    used: dict[str, set[str]] = {}

    def add(where: str, names) -> None:
        for n in names:
            used.setdefault(n, set()).add(where)

    c = compose()
    for svc in ("api", "migrate"):
        add(f"compose {svc}", c["services"][svc].get("environment", {}))
    for fname, d in k8s_docs():
        if d["kind"] == "Secret" and not third_party(d):
            add(f"k8s {fname}", d.get("stringData", {}))
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "christmas-ingest-env":
            add(f"k8s {fname}", d["data"])
    for cd in ecs_containers():
        add(f"ecs {cd['Name']}", [e["Name"] for e in cd.get("Environment", [])])
        add(f"ecs {cd['Name']}", [e["Name"] for e in cd.get("Secrets", [])])
    dockerfile = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    for line in dockerfile.splitlines():
        if line.startswith("ENV "):
            add("Dockerfile", re.findall(r"([A-Z0-9_]+)=", line))
    return used


def cmd_env_names() -> None:
    start = len(errors)
    known = daemon_env_names()
    used = deploy_env_names()
    for name, where in sorted(used.items()):
        if name not in known:
            error(f"{name} (set in {', '.join(sorted(where))}) is not read by christmas-ingest")
    ok(f"{len(used)} env var names set by the deploy files, all read by the daemon: "
       + " ".join(sorted(used)), start)


# ---- metrics --------------------------------------------------------------------------------


def alert_exprs() -> list[tuple[str, str]]:
    doc = load_yaml(DEPLOY / "monitoring" / "alerts.yml")
    return [(r["alert"], r["expr"]) for g in doc["groups"] for r in g["rules"]]


def dashboard() -> dict:
    return json.loads((DEPLOY / "monitoring" / "grafana" / "christmas.json").read_text())


def dashboard_exprs() -> list[tuple[str, str]]:
    out = []
    for p in dashboard()["panels"]:
        for t in p.get("targets", []):
            out.append((f"panel {p['id']} {t['refId']}", t["expr"]))
    return out


def grafana_to_promql(expr: str) -> str:
    return expr.replace("$__rate_interval", "5m").replace("$instance", ".*")


def cmd_metrics() -> None:
    start = len(errors)
    # Counters are named there without `_total`, which prometheus-client appends; histograms
    # add `_bucket`, `_sum` and `_count`.
    text = (SERVER_SRC / "metrics.rs").read_text()
    exported = set(re.findall(r"\bchristmas_[a-z0-9_]+", text))
    used: dict[str, set[str]] = {}
    exprs = alert_exprs() + dashboard_exprs()
    for where, expr in exprs:
        for m in re.findall(r"\b(christmas_[a-z0-9_]+|pg_[a-z0-9_]+)", expr):
            used.setdefault(m, set()).add(where)
    for m, where in sorted(used.items()):
        base = re.sub(r"_(sum|count|bucket|total)$", "", m)
        if m.startswith("pg_"):
            if m not in POSTGRES_EXPORTER:
                error(f"{m} ({', '.join(sorted(where))}) is not a postgres_exporter metric we know")
        elif m not in exported and base not in exported:
            error(f"{m} ({', '.join(sorted(where))}) is not in ingest-server/src/metrics.rs")
    ok(f"{len(used)} metric names in {len(exprs)} queries (alerts.yml, christmas.json): "
       "christmas_* found in metrics.rs, pg_* from postgres_exporter", start)


def cmd_dashboard_rules(out: str) -> None:
    rules = [
        {"record": f"dashboard:{re.sub(r'[^a-z0-9]', '_', where.lower())}", "expr": grafana_to_promql(e)}
        for where, e in dashboard_exprs()
    ]
    Path(out).write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    ok(f"{len(rules)} dashboard queries written to {out}")


# ---- consistency ----------------------------------------------------------------------------


def seconds(v) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m)?", str(v).strip())
    if not m:
        raise ValueError(f"not a duration: {v!r}")
    n = int(m.group(1))
    return {"ms": n / 1000, "s": n, "m": n * 60, None: n}[m.group(2)]


def nginx_directive(name: str) -> str:
    text = (DEPLOY / "nginx" / "nginx.conf").read_text()
    m = re.search(rf"^\s*{name}\s+([^;]+);", text, re.M)
    if not m:
        raise ValueError(f"nginx.conf has no {name}")
    return m.group(1)


def size_bytes(v: str) -> int:
    m = re.fullmatch(r"(\d+)([kKmMgG]?)", v.strip())
    return int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]


def check_timeouts(t: dict, c: dict, resources: dict) -> None:
    start = len(errors)
    shutdown = t.get("shutdown_timeout_ms", 30_000) / 1000
    request = t.get("http", {}).get("request_timeout_ms", 30_000) / 1000
    body = t.get("http", {}).get("max_body_bytes", 8 << 20)
    deploy = k8s_find("Deployment", "christmas-ingest")
    pod = deploy["spec"]["template"]["spec"]
    container = pod["containers"][0]
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_stop_s = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0.0
    graces = {
        "compose api stop_grace_period": seconds(c["services"]["api"]["stop_grace_period"]),
        "k8s terminationGracePeriodSeconds - preStop sleep":
            pod["terminationGracePeriodSeconds"] - pre_stop_s,
        "ECS StopTimeout": resources["TaskDefinition"]["Properties"]["ContainerDefinitions"][0][
            "StopTimeout"],
    }
    for what, g in graces.items():
        if not g > shutdown:
            error(f"{what} ({g} s) must exceed shutdown_timeout_ms ({shutdown} s)")
    ingress = k8s_find("Ingress", "christmas-ingest-ticks")["metadata"]["annotations"]
    tg = {a["Key"]: a["Value"] for a in
          resources["HttpTargetGroup"]["Properties"]["TargetGroupAttributes"]}
    alb = {a["Key"]: a["Value"] for a in
           resources["LoadBalancer"]["Properties"]["LoadBalancerAttributes"]}
    waits = {
        "nginx proxy_read_timeout": seconds(nginx_directive("proxy_read_timeout")),
        "k8s ingress proxy-read-timeout":
            seconds(ingress["nginx.ingress.kubernetes.io/proxy-read-timeout"]),
        "ALB idle timeout": seconds(alb["idle_timeout.timeout_seconds"]),
        "ALB deregistration delay": seconds(tg["deregistration_delay.timeout_seconds"]),
    }
    for what, w in waits.items():
        if not w > request:
            error(f"{what} ({w} s) must exceed http.request_timeout_ms ({request} s)")
    limits = {
        "nginx client_max_body_size": size_bytes(nginx_directive("client_max_body_size")),
        "k8s ingress proxy-body-size":
            size_bytes(ingress["nginx.ingress.kubernetes.io/proxy-body-size"]),
    }
    for what, b in limits.items():
        if b < body:
            error(f"{what} ({b} bytes) is below http.max_body_bytes ({body})")
    ok(f"stop grace periods > shutdown {shutdown:g} s; proxy waits > request timeout "
       f"{request:g} s; body limits >= {body} bytes", start)


def check_compose(c: dict) -> None:
    start = len(errors)
    services = c["services"]
    api = services["api"]
    for key in ("container_name", "ports"):
        if key in api:
            error(f"compose api has {key}: `--scale api=N` needs neither")
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items() if isinstance(
                svc.get("depends_on"), dict) else []:
            if dep not in services:
                error(f"compose {name} depends on unknown service {dep}")
                continue
            want = cond.get("condition")
            if want == "service_healthy" and "healthcheck" not in services[dep]:
                error(f"compose {name} waits for {dep} to be healthy, which has no healthcheck")
            if want == "service_completed_successfully" and services[dep].get("restart") != "no":
                error(f"compose {name} waits for {dep} to complete, which restarts")
        for v in svc.get("volumes", []):
            src = v.split(":", 1)[0]
            if src.startswith("."):
                if not (DEPLOY / src).exists():
                    error(f"compose {name} mounts {src}, which does not exist")
            elif src not in (c.get("volumes") or {}):
                error(f"compose {name} uses volume {src}, not declared")
    text = (DEPLOY / "docker-compose.prod.yml").read_text()
    example = (DEPLOY / ".env.example").read_text()
    declared = set(re.findall(r"^#?\s*([A-Z0-9_]+)=", example, re.M))
    for var in sorted(set(re.findall(r"\$\{([A-Z0-9_]+)", text))):
        if var not in declared:
            error(f"compose uses ${{{var}}}, which deploy/.env.example does not list")
    ok(f"compose: {len(services)} services, references, mounts and .env.example agree", start)


def check_k8s() -> None:
    start = len(errors)
    docs = k8s_docs()
    kust = load_yaml(DEPLOY / "k8s" / "kustomization.yaml")
    for r in kust["resources"]:
        if not (DEPLOY / "k8s" / r).exists():
            error(f"kustomization lists {r}, which does not exist")
    listed = set(kust["resources"])
    for f in sorted((DEPLOY / "k8s").glob("*.yaml")):
        if f.name != "kustomization.yaml" and f.name not in listed:
            error(f"k8s/{f.name} is not in kustomization.yaml")
    defined = {(d["kind"], d["metadata"]["name"]) for _, d in docs}
    deploy = k8s_find("Deployment", "christmas-ingest")
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    for _, d in docs:
        spec = d.get("spec", {})
        pod = (spec.get("template") or {}).get("spec") or {}
        for ctr in pod.get("containers", []):
            for ef in ctr.get("envFrom", []):
                for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if key in ef and (kind, ef[key]["name"]) not in defined:
                        error(f"{d['metadata']['name']} reads {kind} {ef[key]['name']}, not defined")
            ports = {p["name"] for p in ctr.get("ports", [])}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                port = ctr.get(probe, {}).get("httpGet", {}).get("port")
                if isinstance(port, str) and port not in ports:
                    error(f"{probe} uses port {port}, not a container port")
        for vol in pod.get("volumes", []):
            if "configMap" in vol and ("ConfigMap", vol["configMap"]["name"]) not in defined:
                error(f"volume {vol['name']} uses ConfigMap {vol['configMap']['name']}, not defined")
        selector = spec.get("selector")
        if third_party(d):
            continue
        if d["kind"] == "Service":
            sel = selector
        elif d["kind"] == "PodDisruptionBudget":
            sel = selector["matchLabels"]
        else:
            sel = None
        if sel is not None and any(labels.get(k) != v for k, v in sel.items()):
            error(f"{d['kind']} {d['metadata']['name']} selects {sel}, not the Deployment's pods")
        if d["kind"] == "HorizontalPodAutoscaler":
            ref = spec["scaleTargetRef"]
            if (ref["kind"], ref["name"]) not in defined:
                error(f"HPA scales {ref['kind']} {ref['name']}, not defined")
    ok(f"k8s: {len(docs)} objects; names, selectors, probe ports and kustomization agree", start)


def cmd_consistency() -> None:
    t = toml_settings()
    ok(f"deploy/config/christmas.toml parses ({len(t)} settings)")
    cm = k8s_find("ConfigMap", "christmas-ingest-config")
    if cm["data"]["christmas.toml"] != (DEPLOY / "config" / "christmas.toml").read_text():
        error("k8s/configmap.yaml christmas.toml differs from deploy/config/christmas.toml")
    else:
        ok("k8s ConfigMap christmas.toml equals deploy/config/christmas.toml")

    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    msrv = cargo["workspace"]["package"]["rust-version"]
    m = re.search(r"^ARG RUST_VERSION=(\S+)", (DEPLOY / "Dockerfile").read_text(), re.M)
    if not m or m.group(1) != msrv:
        error(f"Dockerfile RUST_VERSION {m and m.group(1)} != workspace rust-version {msrv}")
    else:
        ok(f"Dockerfile builds with Rust {msrv}, the workspace's rust-version")

    c = compose()
    resources = cfn()["Resources"]
    check_timeouts(t, c, resources)
    check_compose(c)
    check_k8s()

    fraction = t.get("ready_ring_fraction", 0.8)
    ring = dict(alert_exprs())["ChristmasRingAboveHighWater"]
    if not re.search(rf">\s*{re.escape(str(fraction))}\s*$", ring.strip()):
        error(f"ChristmasRingAboveHighWater threshold differs from ready_ring_fraction {fraction}")
    else:
        ok(f"ring alert threshold = ready_ring_fraction ({fraction})")

    start = len(errors)
    server_line = re.compile(r"server \S+:\d+( max_fails=\d+)?( fail_timeout=\d+s)?;")
    for line in (DEPLOY / "nginx" / "servers.conf").read_text().splitlines():
        if line.strip() and not line.startswith("#") and not server_line.fullmatch(line.strip()):
            error(f"nginx/servers.conf: {line!r} is not a server line")
    ok("nginx/servers.conf holds server lines only", start)


# ---- check-config ---------------------------------------------------------------------------


def compose_value(v: str) -> str:
    """Interpolates ${VAR}, ${VAR:-default} and ${VAR:?msg} with stand-in values."""
    stand_in = {
        "APP_DB_PASSWORD": "x",
        "CHRISTMAS_API_KEYS": "feed:" + "0" * 64 + ":ingest",
    }

    def sub(m):
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if op == ":-":
            return arg
        return stand_in.get(name, "x")

    return re.sub(r"\$\{([A-Z0-9_]+)(?:(:[-?])([^}]*))?\}", sub, str(v))


def run_check_config(binary: str, what: str, env: dict) -> None:
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")} | env
    r = subprocess.run([binary, "check-config"], env=full, capture_output=True, text=True)
    if r.returncode != 0:
        error(f"{what}: christmas-ingest check-config failed: {(r.stderr or r.stdout).strip()}")
    else:
        ok(f"{what}: christmas-ingest check-config accepts it")


def cmd_check_config(binary: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        toml_path = Path(tmp) / "christmas.toml"
        cm = k8s_find("ConfigMap", "christmas-ingest-config")
        toml_path.write_text(cm["data"]["christmas.toml"])

        env = dict(k8s_find("ConfigMap", "christmas-ingest-env")["data"])
        env |= k8s_find("Secret", "christmas-ingest")["stringData"]
        env["CHRISTMAS_CONFIG"] = str(toml_path)
        run_check_config(binary, "k8s ConfigMaps + Secret", env)

        api = compose()["services"]["api"]["environment"]
        env = {k: compose_value(v) for k, v in api.items()}
        env["CHRISTMAS_CONFIG"] = str(DEPLOY / "config" / "christmas.toml")
        run_check_config(binary, "compose api environment", env)

        container = cfn()["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
        env = {}
        for e in container["Environment"]:
            v = e["Value"]
            env[e["Name"]] = "rediss://cache:6379" if e["Name"] == "REDIS_URL" else (
                "2" if isinstance(v, dict) else str(v))
        tls = "?sslmode=verify-full&sslrootcert=/usr/share/christmas/rds-global-bundle.pem"
        stand_in = {"DATABASE_URL": "postgres://christmas_app:x@db:5432/christmas" + tls,
                    "READ_DATABASE_URL": "postgres://christmas_app:x@replica:5432/christmas" + tls,
                    "CHRISTMAS_API_KEYS": "feed:" + "0" * 64 + ":ingest"}
        for s in container["Secrets"]:
            env[s["Name"]] = stand_in[s["Name"]]
        run_check_config(binary, "ECS task environment (secrets stood in)", env)


def main() -> int:
    cmd, args = sys.argv[1], sys.argv[2:]
    {
        "env-names": cmd_env_names,
        "metrics": cmd_metrics,
        "consistency": cmd_consistency,
        "dashboard-rules": cmd_dashboard_rules,
        "check-config": cmd_check_config,
    }[cmd](*args)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
