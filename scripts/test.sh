#!/usr/bin/env bash
# Installs everything the tests need (Debian services and data, a virtualenv with the
# package and its test extras, torch pinned by constraints.txt) and runs the whole
# suite with ruff and mypy. Used as-is by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || need_apt+=(dataset-fashion-mnist)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)  # promtool tests the alert rules
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing from Debian: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
# the example plugin (tests/test_plugins.py): registered through its entry points only
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps \
  -e examples/movingtarget-example-plugin

.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" = "5" ]; then
  echo "pytest collected no tests: the suite is missing, which is a failure" >&2
fi
exit "$status"
