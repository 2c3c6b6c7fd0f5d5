#!/usr/bin/env bash
# Installs what Hearth needs on a Debian 12 machine, once: QEMU, the guest kernel, busybox,
# iproute2 and nftables (managed networks), filesystem tools, debootstrap (runtime images), Go and a JDK (the go and java runtimes),
# Node.js and npm (to build the web console), PostgreSQL (for the test suite), protoc (for the agent RPC contract), and the Rust
# targets. Safe to run again: it only installs what is missing.
set -euo pipefail

need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

for p in qemu-system-x86 linux-image-cloud-amd64 busybox-static e2fsprogs debootstrap iproute2 nftables \
         postgresql protobuf-compiler cpio ca-certificates golang-go \
         openjdk-17-jdk-headless; do
  pkg_installed "$p" || need_apt+=("$p")
done

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -q
  # qemu-utils may come from backports on some images; keep it at the same version as
  # qemu-system-x86 so the two can be installed together.
  qemu_ver=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/{print $2}')
  extra=()
  if [[ " ${need_apt[*]} " == *" qemu-system-x86 "* ]] && [ -n "$qemu_ver" ]; then
    need_apt=("${need_apt[@]/qemu-system-x86/}")
    extra=("qemu-system-x86=$qemu_ver" "qemu-system-common=$qemu_ver" "qemu-utils=$qemu_ver")
    if pkg_installed qemu-block-extra; then extra+=("qemu-block-extra=$qemu_ver"); fi
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --allow-downgrades \
    "${extra[@]}" ${need_apt[@]}
fi

# The web console is built with Node (not needed at run time: the binary embeds it).
if ! have npm; then
  echo "==> installing Node.js and npm (to build the web console)"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q nodejs npm
fi

if ! have cargo; then
  echo "error: cargo is missing; install Rust from https://rustup.rs and run this again" >&2
  exit 1
fi
if have rustup; then
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
  rustup target list --installed | grep -q x86_64-unknown-linux-musl || rustup target add x86_64-unknown-linux-musl
fi
echo "==> set-up complete"
