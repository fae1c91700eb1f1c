#!/usr/bin/env bash
# Validates everything under deploy/ on this machine alone: no cluster, no cloud account,
# no container images. Schemas and linters (PyPI, into .state/deploy-venv), nginx -t and
# promtool (Debian), and cross-checks against the daemon's own source. Every validator
# runs without network when unshare allows it. Exits 1 if any check fails.
#
#   bash scripts/check-deploy.sh            as root or not (see deploy/tools/requirements.txt)
#   VERBOSE=1 bash scripts/check-deploy.sh  prints every tool's output, not just failures'
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
VENV=$ROOT/.state/deploy-venv
TOOLS=$ROOT/.state/deploy-tools
REQS=deploy/tools/requirements.txt
STARTED=$SECONDS
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

die() {
    printf 'check-deploy: %s\n' "$*" >&2
    exit 2
}

# Runs "$@" as root: directly, through passwordless sudo, or fails.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        return 1
    fi
}

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 && return 0
    as_root apt-get update -qq >/dev/null 2>&1 &&
        as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1
}

# Unpacks Debian package $1 under $TOOLS/$1 without installing it: works without root
# (given package lists) and starts no service.
deb_extract() {
    local pkg=$1 deb
    [ -d "$TOOLS/$pkg/usr" ] && return 0
    mkdir -p "$TOOLS/debs"
    rm -f "$TOOLS/debs/${pkg}"_*.deb
    if ! (cd "$TOOLS/debs" && apt-get download "$pkg") >/dev/null 2>&1; then
        as_root apt-get update -qq >/dev/null 2>&1 || return 1
        (cd "$TOOLS/debs" && apt-get download "$pkg") >/dev/null 2>&1 || return 1
    fi
    deb=$(printf '%s\n' "$TOOLS/debs/${pkg}"_*.deb | head -n 1)
    rm -rf "$TOOLS/$pkg.tmp"
    dpkg-deb -x "$deb" "$TOOLS/$pkg.tmp" && mv "$TOOLS/$pkg.tmp" "$TOOLS/$pkg"
}

setup_venv() {
    local want py=${PYTHON:-python3}
    want=$(sha256sum "$REQS" | cut -d' ' -f1)
    [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" = "$want" ] && return 0
    echo "installing validators into .state/deploy-venv ($REQS)"
    command -v "$py" >/dev/null 2>&1 || apt_install python3 || die "no $py"
    "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        die "$py is older than 3.11 (deploy/tools/check_deploy.py needs tomllib)"
    if ! "$py" -m venv --clear "$VENV" >/dev/null 2>&1; then
        apt_install python3-venv || die "python3 -m venv failed; install python3-venv"
        "$py" -m venv --clear "$VENV" || die "python3 -m venv failed"
    fi
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQS" ||
        die "pip install -r $REQS failed"
    echo "$want" >"$VENV/.requirements.sha256"
}

find_nginx() {
    NGINX=$(command -v nginx 2>/dev/null || true)
    [ -z "$NGINX" ] && [ -x /usr/sbin/nginx ] && NGINX=/usr/sbin/nginx
    [ -n "$NGINX" ] && return 0
    if apt_install nginx; then
        NGINX=/usr/sbin/nginx
    elif deb_extract nginx; then
        NGINX=$TOOLS/nginx/usr/sbin/nginx
    else
        return 1
    fi
}

find_promtool() {
    PROMTOOL=$(command -v promtool 2>/dev/null || true)
    [ -n "$PROMTOOL" ] && return 0
    # Debian's prometheus package ships promtool. Unpacked, not installed: installing it
    # starts a Prometheus server on :9090, the daemon's default TCP ingest port.
    deb_extract prometheus && PROMTOOL=$TOOLS/prometheus/usr/bin/promtool
}

setup_venv
find_nginx || NGINX=""
find_promtool || PROMTOOL=""
PY=$VENV/bin/python

# No network for the validators, to show they need none.
if unshare -n true 2>/dev/null; then
    OFFLINE=(unshare -n)
    NETWORK="none (unshare -n)"
elif unshare -rn true 2>/dev/null; then
    OFFLINE=(unshare -rn)
    NETWORK="none (unshare -rn)"
else
    OFFLINE=()
    NETWORK="the host's (unshare is not permitted here)"
fi
offline() { "${OFFLINE[@]}" "$@"; }

SUMMARY=()
FAILED=0

# check [-v] NAME COMMAND...: runs COMMAND; -v prints its output even when it passes.
check() {
    local show=${VERBOSE:-} name out rc
    if [ "$1" = -v ]; then
        show=1
        shift
    fi
    name=$1
    shift
    out=$("$@" 2>&1)
    rc=$?
    if [ $rc -eq 0 ]; then
        SUMMARY+=("PASS  $name")
        printf 'PASS  %s\n' "$name"
    else
        SUMMARY+=("FAIL  $name")
        FAILED=$((FAILED + 1))
        printf 'FAIL  %s\n' "$name"
        show=1
    fi
    if [ -n "$show" ] && [ -n "$out" ]; then
        printf '%s\n' "$out" | sed 's/^/      /'
    fi
}

skip() {
    SUMMARY+=("SKIP  $1 ($2)")
    printf 'SKIP  %s (%s)\n' "$1" "$2"
}

missing() {
    SUMMARY+=("FAIL  $1 ($2)")
    FAILED=$((FAILED + 1))
    printf 'FAIL  %s (%s)\n' "$1" "$2"
}

nginx_test() {
    local d=$TMP/nginx
    mkdir -p "$d"
    cp deploy/nginx/nginx.conf "$d/"
    echo "listen 127.0.0.1:18080;" >"$d/listen.conf"
    printf 'server 127.0.0.1:%s max_fails=3 fail_timeout=10s;\n' 18081 18082 18083 >"$d/servers.conf"
    "$NGINX" -p "$d/" -c "$d/nginx.conf" -e stderr -t
}

prometheus_k8s_test() {
    local d=$TMP/prom-k8s
    mkdir -p "$d"
    cp deploy/monitoring/alerts.yml "$d/"
    "$PY" - deploy/monitoring/prometheus-k8s.yml "$d/prometheus.yml" <<'EOF' || return 1
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
for job in doc["scrape_configs"]:
    if job.pop("kubernetes_sd_configs", None) is not None:
        job["static_configs"] = [{"targets": ["pod:8080"]}]
yaml.safe_dump(doc, open(sys.argv[2], "w"))
EOF
    offline "$PROMTOOL" check config "$d/prometheus.yml"
}

dashboard_rules_test() {
    "$PY" deploy/tools/check_deploy.py dashboard-rules "$TMP/dashboard-rules.yml" &&
        offline "$PROMTOOL" check rules "$TMP/dashboard-rules.yml"
}

alert_tests() {
    (cd deploy/monitoring && offline "$PROMTOOL" test rules alerts.test.yml)
}

kustomize_test() {
    kubectl kustomize deploy/k8s >"$TMP/kustomized.yaml" &&
        offline "$VENV/bin/kubernetes-validate" --strict --quiet "$TMP/kustomized.yaml"
}

echo "check-deploy: validating deploy/ (network for validators: $NETWORK)"

check "yamllint: every YAML file under deploy/ (deploy/.yamllint.yml, strict)" \
    offline "$VENV/bin/yamllint" --strict -c deploy/.yamllint.yml deploy
check "hadolint: deploy/Dockerfile" \
    offline "$VENV/bin/hadolint" deploy/Dockerfile
check "shellcheck: deploy/postgres/*.sh, deploy/pgbouncer/entrypoint.sh, this script" \
    offline "$VENV/bin/shellcheck" deploy/postgres/*.sh deploy/pgbouncer/entrypoint.sh scripts/check-deploy.sh
check "compose: deploy/docker-compose.prod.yml against the compose-spec JSON schema" \
    offline "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/docker-compose.prod.yml

K8S_FILES=()
for f in deploy/k8s/*.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] || K8S_FILES+=("$f")
done
for v in 1.29.0 1.37.0; do
    check "k8s: deploy/k8s/*.yaml against Kubernetes $v schemas (strict: no unknown fields)" \
        offline "$VENV/bin/kubernetes-validate" --strict --quiet -k "$v" "${K8S_FILES[@]}"
done
if command -v kubectl >/dev/null 2>&1; then
    check "k8s: kubectl kustomize deploy/k8s, then the output against the schemas" kustomize_test
else
    skip "k8s: kustomize build" "no kubectl; the files were validated one by one above"
fi

check "aws: cfn-lint deploy/aws/christmas-ecs.yaml (errors, warnings and informational)" \
    offline "$VENV/bin/cfn-lint" --include-checks I -- deploy/aws/christmas-ecs.yaml

if [ -n "$NGINX" ]; then
    check "nginx: nginx -t on deploy/nginx/nginx.conf with three upstreams on 127.0.0.1" nginx_test
else
    missing "nginx: nginx -t" "no nginx: not root and no sudo, and apt-get download failed"
fi

if [ -n "$PROMTOOL" ]; then
    check "prometheus: promtool check config deploy/monitoring/prometheus.yml (+ alerts.yml)" \
        offline "$PROMTOOL" check config deploy/monitoring/prometheus.yml
    check "prometheus: promtool check config prometheus-k8s.yml, kubernetes_sd_configs swapped for static_configs (Debian's promtool is built without Kubernetes discovery)" \
        prometheus_k8s_test
    check "prometheus: promtool check rules deploy/monitoring/alerts.yml" \
        offline "$PROMTOOL" check rules deploy/monitoring/alerts.yml
    check "prometheus: promtool test rules deploy/monitoring/alerts.test.yml (alert unit tests)" \
        alert_tests
    check "grafana: every dashboard query parses as PromQL (promtool check rules)" dashboard_rules_test
else
    missing "prometheus: promtool checks" "no promtool: apt-get download prometheus failed"
fi
check "grafana: python -m json.tool deploy/monitoring/grafana/christmas.json" \
    offline "$PY" -m json.tool deploy/monitoring/grafana/christmas.json /dev/null

check -v "cross-check: every env var the deploy files set is one christmas-ingest reads" \
    offline "$PY" deploy/tools/check_deploy.py env-names
check -v "cross-check: every metric in alerts.yml and the dashboard is exported (ingest-server/src/metrics.rs)" \
    offline "$PY" deploy/tools/check_deploy.py metrics
check -v "cross-check: timeouts, sizes, names and references agree across files" \
    offline "$PY" deploy/tools/check_deploy.py consistency

BIN=""
for b in target/release/christmas-ingest target/debug/christmas-ingest; do
    if [ -x "$b" ]; then
        BIN=$b
        break
    fi
done
if [ -n "$BIN" ]; then
    check -v "daemon: $BIN check-config with the Compose, Kubernetes and ECS settings" \
        offline "$PY" deploy/tools/check_deploy.py check-config "$BIN"
else
    skip "daemon: check-config" "no built christmas-ingest under target/; cargo build --release -p christmas-ingest"
fi

echo
echo "== tools"
echo "  python            $("$PY" --version 2>&1)"
echo "  cfn-lint          $("$VENV/bin/cfn-lint" --version 2>&1)"
echo "  check-jsonschema  $("$VENV/bin/check-jsonschema" --version 2>&1 | sed 's/.*version //')"
echo "  kubernetes-validate $("$VENV/bin/kubernetes-validate" --version 2>&1)"
echo "  yamllint          $("$VENV/bin/yamllint" --version 2>&1)"
echo "  hadolint          $("$VENV/bin/hadolint" --version 2>&1)"
echo "  shellcheck        $("$VENV/bin/shellcheck" --version 2>&1 | sed -n 's/^version: //p')"
[ -n "$NGINX" ] && echo "  nginx             $("$NGINX" -v 2>&1) ($NGINX)"
[ -n "$PROMTOOL" ] && echo "  promtool          $("$PROMTOOL" --version 2>&1 | head -n 1) ($PROMTOOL)"
command -v kubectl >/dev/null 2>&1 &&
    echo "  kubectl           $(kubectl version --client 2>&1 | head -n 1)"
echo
echo "== not checked here: images are not built or pulled, nothing is deployed; the"
echo "   Compose variant of nginx upstreams (server api:8080) needs Docker's DNS."
echo
echo "== summary"
printf '  %s\n' "${SUMMARY[@]}"
PASSED=0
SKIPPED=0
for s in "${SUMMARY[@]}"; do
    case $s in
        PASS*) PASSED=$((PASSED + 1)) ;;
        SKIP*) SKIPPED=$((SKIPPED + 1)) ;;
    esac
done
echo "  took $((SECONDS - STARTED)) s"
echo "check-deploy: $PASSED passed, $FAILED failed, $SKIPPED skipped"
[ "$FAILED" -eq 0 ]
