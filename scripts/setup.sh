#!/usr/bin/env bash
# Set up this checkout on a fresh machine: apt packages for offscreen MuJoCo and FFmpeg, a
# venv at .venv (or $ROBALIGN_VENV), pinned installs. Idempotent: a second run with the
# same pyproject.toml and script returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${ROBALIGN_VENV:-.venv}"
STAMP="$VENV/.robalign-setup"
WANT="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  exit 0
fi

# FFmpeg for video; Mesa EGL/OSMesa for MuJoCo; Chromium and PostgreSQL for the preference
# page's browser test and the store's PostgreSQL test
APT_PACKAGES=(ffmpeg libegl1 libgl1-mesa-dri libosmesa6 chromium postgresql)
if ! dpkg -s "${APT_PACKAGES[@]}" >/dev/null 2>&1; then
  echo "setup: installing ${APT_PACKAGES[*]}" >&2
  SUDO=""; [[ "$(id -u)" -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${APT_PACKAGES[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
echo "setup: installing Python packages into $VENV (torch first, pinned)" >&2
# torch before anything else, so no dependency can pull an unpinned (multi-GB CUDA) build
"${PIP[@]}" torch==2.14.1 torchvision==0.29.1
"${PIP[@]}" -e ".[dev,vla,hardware]"
# lerobot 0.4.4 declares torch<2.11 and torchcodec<0.11; both work with the pins above
# (see shared/DESIGN.md), so they go in without their declared deps; pyproject lists
# lerobot's runtime needs.
"${PIP[@]}" --no-deps lerobot==0.4.4 torchcodec==0.14.0
# The libfranka-protocol simulators the hardware tests start (tests/franka_protocol/): each pins
# a MuJoCo robalign's robosuite cannot use, so each gets its own venv.
SIMS="${ROBALIGN_SIMS:-.venv-sims}"
for sim in franky-sim==1.0.4 franka-sim==1.1.7; do
  name="${sim%%==*}"
  [[ -x "$SIMS/$name/bin/python" ]] || "$PYTHON" -m venv "$SIMS/$name"
  echo "setup: installing $sim into $SIMS/$name" >&2
  "$SIMS/$name/bin/python" -m pip install -q --disable-pip-version-check "$sim"
done
echo "$WANT" > "$STAMP"
echo "setup: done ($VENV)" >&2
