#!/bin/sh
# Install what a kernel-matrix build needs into the image, and only what is missing,
# so that a base image that already has everything needs no network at all.
# Inputs (environment): TOOLCHAIN=image|mount, PYTHON=0|1, OFFLINE=0|1, CUDA_VERSION,
# PIP_INSTALL (pip install arguments, e.g. torch for a vLLM build).
set -eu

TOOLCHAIN="${TOOLCHAIN:-image}"
PYTHON="${PYTHON:-0}"
OFFLINE="${OFFLINE:-0}"
PIP_INSTALL="${PIP_INSTALL:-}"
VENV=/opt/kernel-matrix/venv

have() { command -v "$1" >/dev/null 2>&1; }

# CMake and ninja come from PyPI (CMake >= 3.26; distributions lag), into a venv.
pip_packages=""
if [ "$TOOLCHAIN" = image ]; then
    have cmake || pip_packages="$pip_packages cmake>=3.26"
    have ninja || pip_packages="$pip_packages ninja"
fi
# A venv made here comes first on PATH, so the build's python3 is the venv's: it
# needs setuptools and wheel for `pip wheel --no-build-isolation`.
if [ "$PYTHON" = 1 ] && { [ -n "$pip_packages$PIP_INSTALL" ] ||
        ! python3 -c 'import setuptools, wheel' >/dev/null 2>&1; }; then
    pip_packages="$pip_packages setuptools wheel"
fi

packages=""
have c++ || packages="$packages g++"
if [ "$PYTHON" = 1 ] || [ -n "$pip_packages$PIP_INSTALL" ]; then
    have python3 || packages="$packages python3"
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        packages="$packages python3-venv"
    fi
fi
if [ "$PYTHON" = 1 ] && ! python3 -c 'import sysconfig, os, sys
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
        >/dev/null 2>&1; then
    packages="$packages python3-dev"
fi
# setuptools-scm (vLLM's version) reads git; a build can do without it offline
# (SETUPTOOLS_SCM_PRETEND_VERSION), so git is not required there.
if [ "$PYTHON" = 1 ] && [ "$OFFLINE" != 1 ]; then
    have git || packages="$packages git"
fi

if [ "$OFFLINE" = 1 ]; then
    if [ -n "$packages$pip_packages$PIP_INSTALL" ]; then
        echo "kernel-matrix: OFFLINE=1 but the base image lacks:$packages$pip_packages${PIP_INSTALL:+ (pip install $PIP_INSTALL)}" >&2
        exit 1
    fi
else
    if [ -n "$packages" ]; then
        if ! have apt-get; then
            echo "kernel-matrix: the base image lacks:$packages (and has no apt-get)" >&2
            exit 1
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get update
        # shellcheck disable=SC2086
        apt-get install -y --no-install-recommends $packages ca-certificates
        rm -rf /var/lib/apt/lists/*
    fi
    if [ -n "$pip_packages" ]; then
        python3 -m venv "$VENV"
        # shellcheck disable=SC2086
        "$VENV/bin/pip" install --no-cache-dir --disable-pip-version-check $pip_packages
    fi
    if [ -n "$PIP_INSTALL" ]; then
        [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
        # shellcheck disable=SC2086
        "$VENV/bin/pip" install --no-cache-dir --disable-pip-version-check $PIP_INSTALL
        "$VENV/bin/pip" list --disable-pip-version-check --format=freeze
    fi
fi

# Check, so a broken image fails here and not in the middle of a cell.
have c++ || { echo "kernel-matrix: no C++ compiler in the image" >&2; exit 1; }
if [ "$TOOLCHAIN" = image ]; then
    if ! [ -x /usr/local/cuda/bin/nvcc ]; then
        echo "kernel-matrix: toolchain 'image' needs /usr/local/cuda/bin/nvcc (an nvidia/cuda:*-devel base image)" >&2
        exit 1
    fi
    PATH="$VENV/bin:$PATH" cmake --version
    PATH="$VENV/bin:$PATH" ninja --version
    /usr/local/cuda/bin/nvcc --version | tail -n 2
fi
echo "kernel-matrix: build image ready (CUDA ${CUDA_VERSION:-?}, toolchain $TOOLCHAIN)"
