#!/usr/bin/env bash
# Install a single-node SLURM (Debian's slurm-wlm) and munge, for the SLURM integration test
# (tests/test_slurm.py). Idempotent: does nothing when the binaries are already there.
#
# Usage: .ci/install-slurm.sh          (needs root or passwordless sudo, and apt)
# Exit status: 0 installed (or already present), 1 could not install (the reason is printed).
#
# The packages' own services are NOT started: the test starts munged, slurmctld and slurmd itself,
# as its own child processes, with all state under a temporary directory.
set -euo pipefail

PACKAGES=(slurm-wlm munge)
BINARIES=(munged slurmctld slurmd sbatch squeue sinfo scancel)

have_all() {
    local b
    for b in "${BINARIES[@]}"; do
        command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || return 1
    done
}

if have_all; then
    echo "install-slurm: slurm and munge already installed"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-slurm: apt-get not found; install slurm (slurmctld, slurmd, client) and munge by hand" >&2
    exit 1
fi

SUDO=()
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        echo "install-slurm: not root and no passwordless sudo; cannot apt-get install ${PACKAGES[*]}" >&2
        exit 1
    fi
fi

# Keep the packages' init scripts from starting system-wide daemons during the install: a
# policy-rc.d that refuses every start (exit 101), removed again afterwards if we created it.
POLICY=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 755 "$POLICY"
    created_policy=1
fi
cleanup() { if [ "$created_policy" = 1 ]; then "${SUDO[@]}" rm -f "$POLICY"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"

if ! have_all; then
    echo "install-slurm: apt-get finished but some of ${BINARIES[*]} are missing" >&2
    exit 1
fi
dpkg-query -W -f='install-slurm: ${Package} ${Version}\n' slurm-wlm slurmctld slurmd slurm-client munge 2>/dev/null || true
