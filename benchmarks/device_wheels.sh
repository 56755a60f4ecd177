#!/usr/bin/env bash
# The wheels benchmarks/device_check.py needs on the lent GPU machine beyond its own image (JAX with CUDA, flax,
# optax, orbax, pyarrow, rich are there; these are not), at the versions uv.lock pins, for its Python 3.12, into
# .whl/ (git-ignored through .git/info/exclude). About 56 MB: the device tool carries at most 64 MiB a call.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  polars==2.1.0 polars-runtime-32==2.1.0 meds==0.4.1 flexible_schema==0.1.1 jsonschema==4.26.0 \
  jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
du -sh .whl
