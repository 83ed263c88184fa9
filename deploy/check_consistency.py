#!/usr/bin/env python3
"""What no schema knows: that deploy/ agrees with itself, with routes.yaml, with the CLI and
with the metric catalogue of docs/operating.md. Run by deploy/check, from the repository root.

    python3 deploy/check_consistency.py [-v] RENDERED_BASE.yaml PROMQL_RULES_OUT.yml

RENDERED_BASE.yaml is `kubectl kustomize deploy/k8s/base` (or "-" to read the base files
directly). PROMQL_RULES_OUT.yml receives every dashboard query as a recording rule, so that
deploy/check can have promtool parse them. Prints each failure (each check with -v) and a
count; exits 1 on a failure.
"""
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(".")
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "k8s" / "base"
failures = []
passed = []
VERBOSE = "-v" in sys.argv
sys.argv = [a for a in sys.argv if a != "-v"]


def check(ok, what, why=""):
    if ok:
        passed.append(what)
        if VERBOSE:
            print(f"ok    {what}")
    else:
        print(f"FAIL  {what}{': ' + why if why else ''}")
        failures.append(what)
    return ok


SECTION = ["start"]


def crashed(kind, exc, tb):
    """A file without what a check reads (a missing key, a wrong type) fails, without a traceback."""
    import traceback
    line = traceback.extract_tb(tb)[-1].lineno if tb else "?"
    print(f"FAIL  {SECTION[0]}: cannot read the files any further: {kind.__name__}: {exc} "
          f"(deploy/check_consistency.py line {line})")
    print(f"consistency: {len(passed)} checks held, {len(failures) + 1} did not (stopped early)")
    sys.exit(1)


sys.excepthook = crashed


def load_all(path):
    return [d for d in yaml.safe_load_all(Path(path).read_text()) if d]


# ---------------------------------------------------------------- the metric catalogue
SECTION[0] = "the metric catalogue"
def catalogue():
    """{name: (type, labels, help)} from the tables of docs/operating.md."""
    names = {}
    for line in (ROOT / "docs" / "operating.md").read_text().splitlines():
        m = re.match(r"^\| `((?:cgw|process)_[a-z0-9_]+)` \| (counter|gauge|histogram) \| (.*) \| (.*) \|$", line)
        if m:
            names[m.group(1)] = (m.group(2), m.group(3), m.group(4).strip())
    return names


CATALOGUE = catalogue()
check(len(CATALOGUE) >= 30, f"docs/operating.md lists {len(CATALOGUE)} metric families")
bad = []
for name, (kind, _labels, help_text) in CATALOGUE.items():
    if not help_text:
        bad.append(f"{name} has no HELP text")
    if kind == "counter" and not name.endswith("_total"):
        bad.append(f"counter {name} does not end in _total")
    if kind != "counter" and name.endswith("_total"):
        bad.append(f"{kind} {name} ends in _total")
    if kind == "histogram" and not re.search(r"_(seconds|bytes)$", name):
        bad.append(f"histogram {name} has no unit suffix")
for today in ("cgw_http_requests_total", "cgw_http_request_duration_seconds",
              "cgw_vendor_calls_total", "cgw_vendor_call_duration_seconds",
              "cgw_vendor_retries_total"):
    if today not in CATALOGUE:
        bad.append(f"today's {today} is missing")
src_names = set(re.findall(r'"(cgw_[a-z0-9_]+)"', (ROOT / "src" / "telemetry.rs").read_text()))
for name in sorted(src_names - set(CATALOGUE)):
    bad.append(f"src/telemetry.rs emits {name}, which the catalogue does not list")
check(not bad, "catalogue names follow the Prometheus conventions and keep today's names", "; ".join(bad))


def metric_refs(text):
    refs = set()
    for m in re.findall(r"\b((?:cgw|process)_[a-z0-9_]+)", text):
        refs.add(re.sub(r"_(bucket|sum|count)$", "", m) if re.sub(r"_(bucket|sum|count)$", "", m) in CATALOGUE else m)
    return refs


# ---------------------------------------------------------------- alert rules
SECTION[0] = "alert rules"
alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
rules_text = (DEPLOY / "prometheus" / "alerts.yml").read_text()
unknown = sorted(metric_refs(rules_text) - set(CATALOGUE))
check(not unknown, "alert rules use only catalogued metrics", ", ".join(unknown))
alert_names = [r["alert"] for g in alerts["groups"] for r in g["rules"] if "alert" in r]
for needed in ("CgwVendorErrorRatioHigh", "CgwVendorLatencyHigh", "CgwCircuitOpen", "CgwShedding",
               "CgwServingStale", "CgwTokenFetchFailing"):
    check(needed in alert_names, f"alert {needed} exists")
tests = yaml.safe_load((DEPLOY / "prometheus" / "alerts_test.yml").read_text())
tested = {t["alertname"] for case in tests["tests"] for t in case.get("alert_rule_test", [])
          if t.get("exp_alerts")}
check(set(alert_names) <= tested, "every alert has a unit test where it fires",
      ", ".join(sorted(set(alert_names) - tested)))
ops_doc = (ROOT / "docs" / "operating.md").read_text()
check(all(f"`{a}`" in ops_doc for a in alert_names), "every alert is described in docs/operating.md",
      ", ".join(a for a in alert_names if f"`{a}`" not in ops_doc))

# ---------------------------------------------------------------- dashboard
SECTION[0] = "dashboard"
dash_path = DEPLOY / "grafana" / "dashboards" / "coupon-gateway.json"
try:
    dash = json.loads(dash_path.read_text())
    check(True, f"{dash_path} is JSON")
except ValueError as e:
    dash = None
    check(False, f"{dash_path} is JSON", str(e))
if dash is not None:
    panels = dash.get("panels", [])
    ids = [p.get("id") for p in panels]
    check(len(ids) == len(set(ids)), "dashboard panel ids are unique")
    rows = [p["title"] for p in panels if p.get("type") == "row"]
    check(len(rows) >= 5, f"dashboard has a row per concern ({', '.join(rows)})")
    exprs = [t["expr"] for p in panels for t in p.get("targets", []) if t.get("expr")]
    unknown = sorted(metric_refs("\n".join(exprs)) - set(CATALOGUE))
    check(not unknown, f"dashboard's {len(exprs)} queries use only catalogued metrics", ", ".join(unknown))
    for p in panels:
        for key in ("x", "y", "w", "h"):
            if key not in p.get("gridPos", {}):
                check(False, f"panel {p.get('title')} has gridPos.{key}")
    # every query as a recording rule, with Grafana's variables filled in, for promtool to parse
    def concrete(e):
        e = e.replace("$__rate_interval", "5m")
        return re.sub(r"\$\{?[a-z_]+\}?", ".*", e)
    rules = [{"record": f"dashboard:query_{i}", "expr": concrete(e)} for i, e in enumerate(exprs)]
    Path(sys.argv[2]).write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    missing = sorted(n for n in CATALOGUE if n not in "\n".join(exprs))
    if VERBOSE:
        print(f"note  catalogued families not on the dashboard: {', '.join(missing) or 'none'}")

# ---------------------------------------------------------------- routes.yaml and the CLI
SECTION[0] = "routes.yaml and the CLI"
routes_copy = BASE / "routes.yaml"
check(routes_copy.read_bytes() == (ROOT / "routes.yaml").read_bytes(),
      "deploy/k8s/base/routes.yaml is the repository's routes.yaml",
      "they differ; run: cp routes.yaml deploy/k8s/base/routes.yaml")
routes = yaml.safe_load((ROOT / "routes.yaml").read_text())
server = routes.get("server", {})
cred_vars = sorted(f"CGW_VENDORS__{v.upper()}__CREDENTIALS__{k.upper()}"
                   for v, c in routes.get("vendors", {}).items() for k in (c.get("credentials") or {}))

main_rs = (ROOT / "src" / "main.rs").read_text()
serve_block = main_rs[main_rs.index("Serve {"):main_rs.index("Validate {")]
flags = {"--" + f.replace("_", "-") for f in re.findall(r"#\[arg\(long[^\]]*\)\]\s*(?:///[^\n]*\s*)*(\w+):", serve_block)}
check({"--config", "--sandbox", "--log-json"} <= flags, f"serve takes {', '.join(sorted(flags))}")

# ---------------------------------------------------------------- Kubernetes
SECTION[0] = "Kubernetes"
if sys.argv[1] == "-":
    kust = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    docs = [d for f in kust["resources"] for d in load_all(BASE / f)]
else:
    docs = load_all(sys.argv[1])
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)
for kind in ("Deployment", "Service", "Secret", "HorizontalPodAutoscaler", "PodDisruptionBudget",
             "ServiceMonitor", "PrometheusRule"):
    check(kind in by_kind, f"base has a {kind}")
deploy = by_kind["Deployment"][0]
pod = deploy["spec"]["template"]["spec"]
pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
c = pod["containers"][0]
env = {e["name"]: e.get("value") for e in c.get("env", [])}
ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
listen_port = int(env.get("CGW_SERVER__LISTEN", server.get("listen", ":8080")).rsplit(":", 1)[1])
check(ports.get("http") == listen_port, f"container port http = {listen_port}, where the gateway listens")
check(c["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness probe on /healthz")
check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness probe on /readyz")
args = c.get("args", [])
used = {a for a in args if a.startswith("--")}
check(used <= flags, f"container args use real flags ({' '.join(args)})", ", ".join(sorted(used - flags)))
config_path = args[args.index("--config") + 1] if "--config" in args else "routes.yaml"
mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
vols = {v["name"]: v for v in pod.get("volumes", [])}
mounted = any(config_path.startswith(mp.rstrip("/") + "/") and "configMap" in vols.get(n, {})
              for mp, n in mounts.items())
check(mounted, f"--config {config_path} lies in the mounted routes ConfigMap")

prestop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
drain_s = int(env.get("CGW_SERVER__DRAIN_DELAY_MS", server.get("drain_delay_ms", 0))) / 1000
grace_s = int(server.get("shutdown_grace_ms", 5000)) / 1000
flush_s = 3
tgps = pod.get("terminationGracePeriodSeconds", 30)
need = prestop + drain_s + grace_s + flush_s
check(prestop > 0 and drain_s > 0 and tgps >= need,
      f"terminationGracePeriodSeconds {tgps} >= preStop {prestop} + drain {drain_s:g} + grace {grace_s:g} + flush {flush_s} = {need:g}")
rp = c["readinessProbe"]
check(rp.get("periodSeconds", 10) * rp.get("failureThreshold", 3) <= drain_s,
      "the readiness probe sees the drain's 503 within drain_delay_ms")
sc, psc = c.get("securityContext", {}), pod.get("securityContext", {})
check((sc.get("runAsNonRoot") or psc.get("runAsNonRoot")) and sc.get("readOnlyRootFilesystem")
      and sc.get("allowPrivilegeEscalation") is False and psc.get("runAsUser", 0) != 0,
      "pod runs non-root with a read-only root filesystem")
res = c.get("resources", {})
check("requests" in res and "memory" in res.get("limits", {}), "container has requests and a memory limit")
secret_refs = [e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e]
secret = by_kind["Secret"][0]
check(secret["metadata"]["name"] in secret_refs, "the credentials Secret is the container's envFrom")
keys = sorted((secret.get("stringData") or {}).keys() | (secret.get("data") or {}).keys())
check(keys == cred_vars, "the Secret names exactly the credentials routes.yaml declares",
      f"Secret {keys} vs routes.yaml {cred_vars}")
check(not secret.get("data") and all(v == "CHANGEME" for v in (secret.get("stringData") or {}).values()),
      "the Secret holds placeholders only (CHANGEME)")

svc = by_kind["Service"][0]
check(all(pod_labels.get(k) == v for k, v in svc["spec"]["selector"].items()), "Service selects the pods")
svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
check(svc_ports.get("http", {}).get("targetPort") in ("http", listen_port), "Service port http targets the container")
sm = by_kind["ServiceMonitor"][0]["spec"]
check(all(svc["metadata"]["labels"].get(k) == v for k, v in sm["selector"]["matchLabels"].items()),
      "ServiceMonitor selects the Service")
check(all(e.get("port") in svc_ports and e.get("path") == "/metrics" for e in sm["endpoints"]),
      "ServiceMonitor scrapes the Service's http port at /metrics")
pr = by_kind["PrometheusRule"][0]["spec"]
check(pr == alerts, "PrometheusRule carries exactly deploy/prometheus/alerts.yml",
      "copy the groups of alerts.yml into deploy/k8s/base/prometheusrule.yaml")
hpa = by_kind["HorizontalPodAutoscaler"][0]["spec"]
check(hpa["scaleTargetRef"]["name"] == deploy["metadata"]["name"] and hpa["minReplicas"] >= 2,
      "HPA scales the Deployment, at least 2 replicas")
pdb = by_kind["PodDisruptionBudget"][0]["spec"]
check(all(pod_labels.get(k) == v for k, v in pdb["selector"]["matchLabels"].items()), "PDB selects the pods")
for kind in ("ServiceMonitor", "PrometheusRule"):
    d = by_kind[kind][0]
    check(d["apiVersion"] == "monitoring.coreos.com/v1" and d.get("metadata", {}).get("name")
          and isinstance(d.get("spec"), dict), f"{kind} has apiVersion monitoring.coreos.com/v1, a name and a spec")

# ---------------------------------------------------------------- the redis component
SECTION[0] = "Kubernetes: components/redis"
COMP = DEPLOY / "k8s" / "components" / "redis"
comp = yaml.safe_load((COMP / "kustomization.yaml").read_text())
comp_docs = [d for f in comp["resources"] for d in load_all(COMP / f)]
comp_kinds = {d["kind"]: d for d in comp_docs}
check({"Deployment", "Service", "Secret"} <= comp_kinds.keys(), "the redis component has a Deployment, a Service and a Secret")
r_pod = comp_kinds["Deployment"]["spec"]["template"]
r_c = r_pod["spec"]["containers"][0]
r_svc = comp_kinds["Service"]
check(all(r_pod["metadata"]["labels"].get(k) == v for k, v in r_svc["spec"]["selector"].items()),
      "the redis Service selects the redis pod")
check(not all(pod_labels.get(k) == v for k, v in r_svc["spec"]["selector"].items())
      and not all(r_pod["metadata"]["labels"].get(k) == v for k, v in svc["spec"]["selector"].items()),
      "the gateway's and redis's Services do not select each other's pods")
r_ports = {p["name"]: p["containerPort"] for p in r_c.get("ports", [])}
r_port = r_svc["spec"]["ports"][0]
check(r_port["targetPort"] in r_ports or r_port["targetPort"] in r_ports.values(), "the redis Service targets the container's port")
patch_env = {}
for p in comp.get("patches", []):
    doc = yaml.safe_load(p["patch"])
    for cont in doc["spec"]["template"]["spec"]["containers"]:
        patch_env.update({e["name"]: e for e in cont.get("env", [])})
url = patch_env.get("CGW_SERVER__SHARED__REDIS_URL", {}).get("value", "")
check(url == f"redis://{r_svc['metadata']['name']}:{r_port['port']}/0",
      f"the gateway's CGW_SERVER__SHARED__REDIS_URL ({url}) is the redis Service")
r_secret = comp_kinds["Secret"]
refs = [patch_env.get("CGW_SERVER__SHARED__PASSWORD", {}).get("valueFrom", {}).get("secretKeyRef", {})]
refs += [e.get("valueFrom", {}).get("secretKeyRef", {}) for e in r_c.get("env", [])]
check(all(r.get("name") == r_secret["metadata"]["name"] and r.get("key") in (r_secret.get("stringData") or {}) for r in refs)
      and len(refs) == 2, "redis and the gateway read the password from the component's Secret")
check(all(v == "CHANGEME" for v in r_secret["stringData"].values()), "the redis Secret holds a placeholder only (CHANGEME)")
r_sc, r_psc = r_c.get("securityContext", {}), r_pod["spec"].get("securityContext", {})
check(r_sc.get("readOnlyRootFilesystem") and r_psc.get("runAsNonRoot") and r_psc.get("runAsUser", 0) != 0,
      "redis runs non-root with a read-only root filesystem")
prod = yaml.safe_load((DEPLOY / "k8s" / "overlays" / "production" / "kustomization.yaml").read_text())
check("../../components/redis" in prod.get("components", []), "production (several replicas) includes the redis component")

# ---------------------------------------------------------------- Dockerfile
SECTION[0] = "Dockerfile"
dockerfile = (DEPLOY / "Dockerfile").read_text()
stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", dockerfile, re.M | re.I)
check(len(stages) >= 2, f"Dockerfile is multi-stage ({', '.join(s[1] or s[0] for s in stages)})")
final = dockerfile[dockerfile.rfind("\nFROM "):]
users = re.findall(r"^USER\s+(\S+)", final, re.M)
check(users and users[-1].split(":")[0] not in ("0", "root"), "the runtime stage runs as a non-root USER")
cmd = re.search(r"^CMD\s+(\[.*\])", final, re.M)
cmd_args = json.loads(cmd.group(1)) if cmd else []
check(set(a for a in cmd_args if a.startswith("--")) <= flags and config_path in cmd_args,
      f"the image's CMD uses real flags and {config_path}")
check(re.search(r"COPY .*routes\.yaml\s+" + re.escape(config_path), final) is not None,
      f"the image carries routes.yaml at {config_path}")
ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
check(all(f"!{p}" in ignore for p in ("Cargo.toml", "Cargo.lock", "src/", "routes.yaml")),
      "Dockerfile.dockerignore lets in what the build copies")

# ---------------------------------------------------------------- compose and its files
SECTION[0] = "compose and its files"
compose = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())
services = compose["services"]
for name, s in services.items():
    check("image" in s or "build" in s, f"compose service {name} has an image or a build")
    for v in s.get("volumes", []):
        src = v.split(":")[0]
        if src.startswith("."):
            check((DEPLOY / src).exists(), f"compose service {name} mounts {src}, which exists")
    for dep in s.get("depends_on", []):
        check(dep in services, f"compose service {name} depends on {dep}, which exists")
gw = services["gateway"]
check((DEPLOY / gw["build"]["context"] / gw["build"]["dockerfile"]).exists(), "compose builds deploy/Dockerfile")
check(gw["command"][:2] == ["serve", "--sandbox"] and set(a for a in gw["command"] if a.startswith("--")) <= flags,
      "compose runs the gateway on its sandbox with real flags")
check(gw.get("environment", {}).get("CGW_SERVER__LISTEN", "").startswith("0.0.0.0:"),
      "compose's gateway listens beyond loopback (the sandbox defaults to 127.0.0.1)")
check(all(s.get("profiles") for n, s in services.items() if n == "redis"), "compose's redis is optional (a profile)")
prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
targets = [t for j in prom["scrape_configs"] for sc_ in j.get("static_configs", []) for t in sc_["targets"]]
check(all(t.split(":")[0] in services for t in targets), f"Prometheus scrapes compose services ({', '.join(targets)})")
check(any(j["job_name"] == "coupon-gateway" for j in prom["scrape_configs"]),
      "Prometheus's job is coupon-gateway, as the alerts expect")
otel = yaml.safe_load((DEPLOY / "otel" / "collector.yaml").read_text())
bad = [f"{kind[:-1]} {c_}" for p in otel["service"]["pipelines"].values()
       for kind in ("receivers", "processors", "exporters") for c_ in p.get(kind, []) if c_ not in otel.get(kind, {})]
bad += [e for e in otel["service"].get("extensions", []) if e not in otel.get("extensions", {})]
check(not bad, "the collector's pipelines use only components it defines", ", ".join(bad))
gw_env = gw.get("environment", {})
endpoint = gw_env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
check(endpoint.split("//")[-1].split(":")[0] in services, f"the gateway exports spans to {endpoint}")
ds = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "datasources.yaml").read_text())
check(any(d["type"] == "prometheus" and d.get("uid") == "prometheus" for d in ds["datasources"]),
      "Grafana has the Prometheus datasource the dashboard defaults to")
prov = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml").read_text())
graf_mounts = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
check(all(graf_mounts.get(p["options"]["path"]) == "./grafana/dashboards" for p in prov["providers"]),
      "Grafana loads the dashboards folder it mounts")

print(f"consistency: {len(passed)} checks held, {len(failures)} did not")
sys.exit(1 if failures else 0)
