#!/bin/sh
# The full first-boot matrix of docs/benchmarks.md, in one command:
#   every mode (drive-tuned, service, service-loaded, stock, drive-pollinate, floor),
#   RUNS boots each, interleaved; then a boot storm of K guests, drive-tuned vs service.
# Writes docs/benchmarks/{results.json,boots.csv,boot-stages.png,storm.json,storm.png}.
# Usage: bench/first_boot.sh [RUNS [K]]     (defaults: 5 boots per mode, storm of 4)
# Under TCG (this machine kind) it takes about 35 min; images are built first if missing.
set -eu
cd "$(dirname "$0")/.."
RUNS=${1:-5}
K=${2:-4}
[ -x .venv/bin/configdrive ] || scripts/setup --system
.venv/bin/configdrive bench boot --runs "$RUNS" -o docs/benchmarks
.venv/bin/configdrive bench storm --guests "$K" -o docs/benchmarks
