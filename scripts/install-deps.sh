#!/usr/bin/env bash
# Installs the Debian packages compactor builds against. Idempotent: installs only what is missing.
# Usage: scripts/install-deps.sh   (needs root or sudo; CI runs it on a fresh Debian machine)
set -euo pipefail
packages=(
  build-essential cmake pkg-config git
  libopenblas-dev liblapacke-dev
  nlohmann-json3-dev libyaml-cpp-dev libcli11-dev libfmt-dev
  libsqlite3-dev libsentencepiece-dev libpcre2-dev libutf8proc-dev libssl-dev
  libgtest-dev libgmock-dev libbenchmark-dev
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
sudo_cmd=""
[ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
echo "install-deps: installing ${missing[*]}"
$sudo_cmd apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
