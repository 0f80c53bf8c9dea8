#!/bin/sh
# Fashion-MNIST for `chamlab adapt --oracle train --data /usr/share/datasets/fashion-mnist` (issue 22):
# Debian's dataset-fashion-mnist package (the 60,000 training images and their labels; chamlab reads
# only the train-*-idx*-ubyte.gz files, never t10k). Installs it when it is missing:
#   - as root with apt-get: `apt-get update` once, then `apt-get install dataset-fashion-mnist`;
#   - otherwise: prints one line saying how to install it, and exits 1.
# CHAMLAB_NO_APT=1 never installs. Usage: scripts/data-fashion.sh [--check]  (--check never installs).
set -eu

dir=/usr/share/datasets/fashion-mnist
pkg=dataset-fashion-mnist
check_only=${CHAMLAB_NO_APT:-0}
[ "${1:-}" = "--check" ] && check_only=1

if [ -f "$dir/train-images-idx3-ubyte.gz" ] && [ -f "$dir/train-labels-idx1-ubyte.gz" ]; then
  echo "Fashion-MNIST: $dir"
  exit 0
fi
if [ "$check_only" != 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing $pkg (Fashion-MNIST, about 30 MB)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
  echo "Fashion-MNIST: $dir"
else
  echo "error: Fashion-MNIST is not installed at $dir; install it as root (apt-get install -y $pkg)" \
    "or run 'make data-fashion' as root" >&2
  exit 1
fi
