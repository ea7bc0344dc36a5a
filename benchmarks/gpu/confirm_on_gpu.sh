#!/usr/bin/env bash
# On a GPU machine with no network: install this package from the checkout (its
# dependencies from wheels carried in .whl/), then have the CUDA driver confirm the
# check's verdicts for every sample-extension build under .gpu/builds/ and for the
# installed distributions under .gpu/site/ (docs/gpu-verification.md).
# Writes OUT/confirm.log and one JSON per check to OUT (default: ./gpu-out).
set -uo pipefail
out=${OUT:-gpu-out}
mkdir -p "$out"
log="$out/confirm.log"
site=/tmp/kernel-matrix-site
rm -rf "$site"
{
  nvidia-smi -L
  python3 -m pip install -q --no-index --no-deps --no-compile --no-build-isolation \
    --target "$site" .whl/*.whl .
} >"$log" 2>&1 || { cat "$log"; exit 3; }
export PYTHONPATH="$site${GPU_SITE:+:$GPU_SITE}"
km="$site/bin/kernel-matrix"
for build in .gpu/builds/*/; do
  [ -d "$build" ] || continue
  name=$(basename "$build" | tr -c 'A-Za-z0-9._\n-' '_')
  families=examples/sample_ext/families.yaml  # or the matrix the build came from
  [ -f "$build/FAMILIES" ] && families=$(cat "$build/FAMILIES")
  echo "=== $build ($families)" >>"$log"
  "$km" check "$build"*.so --families "$families" --devices local \
    --confirm-with-driver --launch-stubs >>"$log" 2>&1
  echo "exit $?" >>"$log"
  "$km" check "$build"*.so --families "$families" --devices local \
    --confirm-with-driver --launch-stubs --json >"$out/$name.json" 2>>"$log"
done
for dist in ${GPU_DISTS:-}; do
  echo "=== --installed $dist" >>"$log"
  start=$(date +%s)
  "$km" check --installed "$dist" --devices local --confirm-with-driver --launch-stubs \
    --json >"$out/installed-$dist.json" 2>>"$log"
  echo "exit $? after $(( $(date +%s) - start )) s" >>"$log"
  "$km" check --installed "$dist" --devices local >>"$log" 2>&1
done
cat "$log"
