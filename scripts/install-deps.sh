#!/usr/bin/env bash
# Installs every Debian 12 package that pulsesync's build, server, tests,
# benchmarks and fuzzers need (clang-14 + libclang-rt-14-dev: libFuzzer and
# the sanitizer runtimes for -fsanitize=fuzzer,address; llvm-14: the
# symbolizer for their reports). Idempotent: packages already present are left alone, and
# apt is only touched when something is missing.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config ccache git ca-certificates
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libssl-dev libbrotli-dev
  libpqxx-dev libpq-dev prometheus-cpp-dev
  libsqlite3-dev sqlite3
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  postgresql-15 postgresql-client-15 postgresql-contrib
  procps iproute2 util-linux openssl
  haproxy
  libcurl4-openssl-dev
  clang-14 libclang-rt-14-dev llvm-14
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# postgresql-common would create and start a cluster on install; pulsesync
# manages its own clusters, so ask it not to.
if [ ! -f /etc/postgresql-common/createcluster.conf ]; then
  $SUDO mkdir -p /etc/postgresql-common
  echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.conf >/dev/null
fi
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "install-deps: done"
