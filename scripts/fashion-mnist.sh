#!/usr/bin/env bash
# Make real Fashion-MNIST available: nothing to do when $MOLEARN_FASHION_MNIST is set or the Debian package
# dataset-fashion-mnist is installed; otherwise install that package with apt-get (as root, or with sudo).
set -euo pipefail
files=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ -n "${MOLEARN_FASHION_MNIST:-}" ] || [ -f "$files" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "Fashion-MNIST is missing and apt-get is not available. Either install the Debian/Ubuntu package" \
       "dataset-fashion-mnist, or put the four *-ubyte.gz files of Fashion-MNIST in a folder and set" \
       "MOLEARN_FASHION_MNIST=<that folder>." >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "Fashion-MNIST is missing: run 'apt-get install dataset-fashion-mnist' as root, or set" \
         "MOLEARN_FASHION_MNIST=<folder with the four *-ubyte.gz files>." >&2
    exit 1
  fi
fi
echo "installing the Debian package dataset-fashion-mnist (real Fashion-MNIST, 31 MB)" >&2
$sudo apt-get install -y dataset-fashion-mnist >&2 \
  || { $sudo apt-get update >&2 && $sudo apt-get install -y dataset-fashion-mnist >&2; }
