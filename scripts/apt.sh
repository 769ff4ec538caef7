#!/usr/bin/env bash
# Install Debian packages with apt-get when they are missing (as root, or with sudo).
# Usage: scripts/apt.sh PACKAGE[:FILE_OR_COMMAND] ...  (skips a package whose file or command already exists)
set -euo pipefail
missing=()
for spec in "$@"; do
  pkg="${spec%%:*}"; probe="${spec#*:}"
  if [ "$probe" != "$spec" ]; then
    if [ -e "$probe" ] || command -v "$probe" >/dev/null 2>&1; then continue; fi
  elif dpkg -s "$pkg" >/dev/null 2>&1; then continue; fi
  missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "missing Debian packages: ${missing[*]} (apt-get is not available: install them another way)" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "missing Debian packages: run 'apt-get install ${missing[*]}' as root" >&2
    exit 1
  fi
fi
echo "installing Debian packages: ${missing[*]}" >&2
$sudo apt-get install -y "${missing[@]}" >&2 \
  || { $sudo apt-get update >&2 && $sudo apt-get install -y "${missing[@]}" >&2; }
