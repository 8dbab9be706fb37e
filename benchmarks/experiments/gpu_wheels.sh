#!/usr/bin/env bash
# Build the wheel set that benchmarks/experiments/gpu_check.sh installs on the GPU machine (Python 3.12, torch present,
# no network): the nondiff dependencies that machine's image lacks, at the versions this venv runs.
#
#   bash benchmarks/experiments/gpu_wheels.sh [DIR]        # default .gpu-wheels (gitignored); `make gpu-wheels` runs it
#
# Packages already in that image (docs: numpy, torch, pyyaml, rich, tqdm, safetensors, imageio, pillow,
# matplotlib, tensorboard, opencv-python-headless, cloudpickle, psutil, absl-py, etils, typing-extensions)
# are not carried. imageio-ffmpeg (videos, ~30 MB) and ray (the rllib backend) are left out: the check
# trains and evaluates without video on the SB3 backend. The set must stay under 64 MiB (the device
# tool's limit for what travels); the script fails if it does not.
set -euo pipefail
DIR="${1:-.gpu-wheels}"
PY="${PYTHON:-.venv/bin/python}"
ver() { "$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
PKGS=(gymnasium farama-notifications stable-baselines3 ale-py mujoco mujoco-core mujoco-studio glfw pyopengl pydantic pydantic-core
      annotated-types typing-inspection typing-extensions)
SPECS=()
for p in "${PKGS[@]}"; do SPECS+=("$p==$(ver "$p")"); done
rm -rf "$DIR" && mkdir -p "$DIR"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$DIR" "${SPECS[@]}"
ls -l "$DIR"
BYTES=$(du -cb "$DIR"/*.whl | tail -1 | cut -f1)
echo "wheels: $(ls "$DIR"/*.whl | wc -l) files, $((BYTES / 1024 / 1024)) MiB ($BYTES bytes) in $DIR"
if [ "$BYTES" -gt $((64 * 1024 * 1024)) ]; then echo "wheel set is over 64 MiB: it will not travel" >&2; exit 1; fi
