#!/usr/bin/env bash
# Structure of the deployment files, without Docker or Kubernetes (none runs
# on CI machines) and without a YAML library (python is not guaranteed):
# docker-compose.yml is flattened by a small awk reader for the block-style
# YAML subset it uses (no anchors, no multi-line strings) into
# "path=value" lines, e.g. services.balancer.ports[]="127.0.0.1:50051:50051",
# and checked: services, images, builds, ports, dependencies, health checks,
# and that every file the stack references exists. Then the Dockerfile,
# HAProxy configurations, Kubernetes manifests and the systemd unit.
# Usage: deploy_files_test.sh <repository root>
set -uo pipefail
root="${1:?usage: deploy_files_test.sh <repository root>}"
cd "$root" || exit 2
failures=0
fail() { printf 'FAIL: %s\n' "$*" >&2; failures=$((failures + 1)); }
pass() { printf 'ok: %s\n' "$*"; }

# flatten FILE: prints path=value for each scalar, path[]=value for list items.
flatten() {
  awk '
    function strip(s) { sub(/^[ \t]+/, "", s); sub(/[ \t]+$/, "", s); return s }
    BEGIN { sq = sprintf("%c", 39) }
    function uncomment(s,   i, c, q) {  # drop a trailing comment outside quotes
      q = ""
      for (i = 1; i <= length(s); i++) {
        c = substr(s, i, 1)
        if (q == "" && (c == "\"" || c == sq)) q = c
        else if (q != "" && c == q) q = ""
        else if (q == "" && c == "#" && (i == 1 || substr(s, i - 1, 1) ~ /[ \t]/)) return substr(s, 1, i - 1)
      }
      return s
    }
    function path(depth,   p, i) {
      p = ""
      for (i = 1; i <= depth; i++) p = p (p == "" ? "" : ".") key[i]
      return p
    }
    /^[ \t]*(#|$)/ || /^---/ { next }
    {
      line = uncomment($0)
      if (strip(line) == "") next
      match(line, /^ */); indent = RLENGTH
      body = strip(line)
      # Pop keys that are not parents of this line.
      while (depth > 0 && ind[depth] >= indent) depth--
      if (body ~ /^- /) {
        item = strip(substr(body, 3))
        if (item !~ /^[A-Za-z_][A-Za-z0-9_.\/-]*:( |$)/) { print path(depth) "[]=" item; next }
        # "- key: value": a mapping in a list; its keys sit under "[]".
        depth++; key[depth] = "[]"; ind[depth] = indent
        body = item; indent += 2
      }
      k = body; v = ""
      if (match(body, /:( |$)/)) { k = strip(substr(body, 1, RSTART - 1)); v = strip(substr(body, RSTART + 1)) }
      gsub(/^"|"$/, "", k)
      depth++; key[depth] = k; ind[depth] = indent
      if (v != "") { print path(depth) "=" v; depth-- } else print path(depth) "="
    }
  ' "$1"
}

compose="$(flatten docker-compose.yml)"
has() {  # has PATTERN DESCRIPTION: a flattened line matches the regex
  if grep -Eq -- "$1" <<<"$compose"; then pass "$2"; else fail "$2 (no line matching $1)"; fi
}

services="$(sed -n 's/^services\.\([^.=]*\)\..*/\1/p' <<<"$compose" | sort -u | tr '\n' ' ')"
[ "$services" = "balancer migrate postgres pulsesyncd-1 pulsesyncd-2 " ] &&
  pass "services: $services" || fail "services are [$services]"

has '^services\.postgres\.image=postgres:15$' "PostgreSQL 15"
has '^services\.postgres\.healthcheck\.test=\["CMD-SHELL", "pg_isready' "postgres health check"
has '^services\.migrate\.command=\["pulsesyncd", "migrate"\]$' "migrate is a one-shot pulsesyncd migrate"
has '^services\.migrate\.restart="no"$' "migrate is not restarted"
has '^services\.migrate\.depends_on\.postgres\.condition=service_healthy$' "migrate waits for postgres"
for r in pulsesyncd-1 pulsesyncd-2; do
  has "^services\.$r\.image=pulsesync:latest$" "$r image"
  has "^services\.$r\.command=\[\"pulsesyncd\", \"serve\"\]$" "$r serves"
  has "^services\.$r\.depends_on\.migrate\.condition=service_completed_successfully$" "$r waits for the migration"
  has "^services\.$r\.healthcheck\.test=\[\"CMD\", \"pulsesyncd\", \"health\"\]$" "$r gRPC health check"
  has "^services\.$r\.environment\.PULSESYNC_PLAINTEXT=\"1\"$" "$r asks for plaintext explicitly"
  has "^services\.$r\.environment\.PULSESYNC_METRICS_LISTEN=0\.0\.0\.0:9464$" "$r serves metrics"
  has "^services\.$r\.environment\.DATABASE_URL=postgresql://[^@]*@postgres:5432/" "$r database is the postgres service"
done
has '^services\.pulsesyncd-1\.ports\[\]="127\.0\.0\.1:9464:9464"$' "replica 1 metrics port"
has '^services\.pulsesyncd-2\.ports\[\]="127\.0\.0\.1:9465:9464"$' "replica 2 metrics port"
has '^services\.balancer\.ports\[\]="127\.0\.0\.1:50051:50051"$' "balancer on 127.0.0.1:50051"
has '^services\.balancer\.build\.target=balancer$' "balancer image from deploy/Dockerfile"
has '^services\.balancer\.depends_on\.pulsesyncd-1\.condition=service_healthy$' "balancer waits for replica 1"
has '^services\.balancer\.depends_on\.pulsesyncd-2\.condition=service_healthy$' "balancer waits for replica 2"
has '^services\.balancer\.healthcheck\.test=\["CMD", "pulsesyncd", "health", "--address=127\.0\.0\.1:50051"\]$' "balancer gRPC health check"
has '^volumes\.pgdata' "named volume for PostgreSQL"

# Every service has a health check or is the one-shot job; every build uses
# the Dockerfile with a target that exists.
for s in $services; do
  [ "$s" = migrate ] && continue
  grep -q "^services\.$s\.healthcheck\.test=" <<<"$compose" || fail "$s has no health check"
done
while IFS= read -r target; do
  grep -Eq "^FROM .* AS $target\$" deploy/Dockerfile && pass "Dockerfile stage $target" ||
    fail "Dockerfile has no stage $target"
done < <(sed -n 's/^services\.[^.]*\.build\.target=//p' <<<"$compose" | sort -u)
# depends_on names only services that exist.
while IFS= read -r dep; do
  [[ " $services " == *" $dep "* ]] || fail "depends_on names unknown service $dep"
done < <(sed -n 's/^services\.[^.]*\.depends_on\.\([^.]*\)\..*/\1/p' <<<"$compose" | sort -u)

# Files referenced by the compose file: build contexts, Dockerfiles, bind mounts.
while IFS= read -r f; do
  [ -e "$f" ] && pass "exists: $f" || fail "docker-compose.yml references missing $f"
done < <({
  sed -n 's/^services\.[^.]*\.build\.context=//p; s/^services\.[^.]*\.build\.dockerfile=//p' <<<"$compose"
  sed -n 's/^services\.[^.]*\.volumes\[\]=\(\.[^:]*\):.*/\1/p' <<<"$compose"
} | sort -u)
# Files the Dockerfile copies from the build context.
while IFS= read -r f; do
  [ -e "$f" ] && pass "Dockerfile source exists: $f" || fail "deploy/Dockerfile copies missing $f"
done < <(grep -E '^COPY ' deploy/Dockerfile | grep -v -- '--from=' |
           awk '{ for (i = 2; i < NF; i++) print $i }' | sort -u)

# The Dockerfile: multi-stage on Debian 12, the project's install script,
# plaintext asked for explicitly, health checks.
grep -q '^FROM debian:12 AS build$' deploy/Dockerfile && pass "build stage on debian:12" || fail "no debian:12 build stage"
grep -q 'scripts/install-deps.sh' deploy/Dockerfile && pass "Dockerfile uses install-deps.sh" || fail "Dockerfile does not use install-deps.sh"
grep -q 'PULSESYNC_PLAINTEXT=1' deploy/Dockerfile && pass "image sets PULSESYNC_PLAINTEXT=1" || fail "image lacks PULSESYNC_PLAINTEXT=1"
[ "$(grep -c '^HEALTHCHECK' deploy/Dockerfile)" -ge 2 ] && pass "images have HEALTHCHECKs" || fail "missing HEALTHCHECK"
[ "$(grep -E '^FROM ' deploy/Dockerfile | tail -n 1 | awk '{ print $NF }')" = runtime ] &&
  pass "the default target is runtime" || fail "the last stage should be runtime"

# HAProxy: both replicas, HTTP/2 both sides. Validated by haproxy itself when installed.
cfg=deploy/haproxy/haproxy.cfg
grep -Eq '^ *bind :50051 proto h2$' "$cfg" && pass "haproxy binds h2" || fail "haproxy bind"
for r in 1 2; do
  grep -Eq "^ *server replica$r pulsesyncd-$r:50051 proto h2 check" "$cfg" && pass "haproxy replica $r" ||
    fail "haproxy lacks replica $r"
done
if command -v haproxy >/dev/null; then
  haproxy -c -q -f "$cfg" >/dev/null 2>&1 && pass "haproxy -c accepts $cfg" || fail "haproxy -c rejects $cfg"
fi

# Kubernetes: the kinds, probes, resources, secrets, and every resource file.
k8s=deploy/kubernetes
for f in $(flatten "$k8s/kustomization.yaml" | sed -n 's/^resources\[\]=//p'); do
  [ -e "$k8s/$f" ] && pass "kustomization resource $f" || fail "kustomization lists missing $f"
done
dep="$(flatten "$k8s/deployment.yaml")"
for want in '^kind=Deployment$' '^spec\.replicas=[2-9]' \
            '\.readinessProbe\.grpc\.port=50051$' '\.livenessProbe\.grpc\.port=50051$' \
            '\.resources\.requests\.cpu=' '\.resources\.requests\.memory=' \
            '\.secretKeyRef\.name=pulsesync-secrets$' '\.configMapRef\.name=pulsesync-config$' \
            '\.secret\.secretName=pulsesync-tls$' '\.allowPrivilegeEscalation=false$'; do
  grep -Eq -- "$want" <<<"$dep" && pass "deployment: $want" || fail "deployment lacks $want"
done
job="$(flatten "$k8s/migrate-job.yaml")"
grep -q '^kind=Job$' <<<"$job" && grep -q 'args=\["pulsesyncd", "migrate"\]$' <<<"$job" &&
  pass "migration Job" || fail "migration Job"
grep -q '^  PULSESYNC_PLAINTEXT: "1"$' "$k8s/configmap.yaml" && pass "configmap asks for plaintext" || fail "configmap plaintext"
grep -q '^kind: Service$' "$k8s/service.yaml" && pass "Service" || fail "Service"
grep -q '^kind: Secret$' "$k8s/secret.example.yaml" && pass "Secret example" || fail "Secret example"

# systemd: sandboxing, plaintext, and a unit systemd accepts (when present).
unit=deploy/systemd/pulsesyncd.service
for want in NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes \
            DynamicUser=yes CapabilityBoundingSet= SystemCallFilter=@system-service \
            Environment=PULSESYNC_PLAINTEXT=1 "ExecStart=/usr/local/bin/pulsesyncd serve"; do
  grep -qx -- "$want" "$unit" && pass "unit: $want" || fail "unit lacks $want"
done
[ -e deploy/systemd/pulsesyncd.env.example ] && pass "unit env example" || fail "unit env example missing"
if command -v systemd-analyze >/dev/null; then
  # Only the unit's syntax: the binary is not installed on a build machine.
  out="$(systemd-analyze verify "$unit" 2>&1 | grep -v 'is not executable' || true)"
  [ -z "$out" ] && pass "systemd-analyze verify" || fail "systemd-analyze verify: $out"
fi

# deploy/local: the scripts exist and parse.
for s in deploy/local/stack.sh deploy/docker-entrypoint.sh; do
  bash -n "$s" && pass "$s parses" || fail "$s does not parse"
done

if [ "$failures" -gt 0 ]; then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "all deployment checks passed"
