#!/usr/bin/env bash
# Creates (or reuses) the BigQuery emulator's own virtualenv.
#
# bqemulator is a server with pins that conflict with the project's (grpcio, protobuf,
# pyarrow), so it lives in its own venv and the tests start it as a subprocess. Offline, it
# would try to download its DuckDB extensions at start-up and exit: the extensions come
# from PyPI here instead (numpy: its Python UDFs need it but it does not declare it) and are linked where DuckDB looks for them.
#
# Usage: tools/bqemulator-venv.sh [VENV_DIR]   (default: .venv/bqemulator)
set -euo pipefail

VENV_DIR="${1:-.venv/bqemulator}"
PYTHON="${PYTHON:-python3.11}"
BQEMULATOR_VERSION="1.4.0"
DUCKDB_VERSION="1.5.5"
EXT_DIR="${HOME}/.duckdb/extensions/v${DUCKDB_VERSION}/linux_amd64"
# Bump the stamp name when the package list changes, so existing venvs are updated.
STAMP="${VENV_DIR}/.bqemulator-${BQEMULATOR_VERSION}-duckdb-${DUCKDB_VERSION}-numpy"

if [[ ! -f "${STAMP}" ]]; then
    test -x "${VENV_DIR}/bin/python" || "${PYTHON}" -m venv "${VENV_DIR}"
    "${VENV_DIR}/bin/python" -m pip install -q --upgrade pip
    "${VENV_DIR}/bin/python" -m pip install -q \
        "bqemulator==${BQEMULATOR_VERSION}" \
        "duckdb==${DUCKDB_VERSION}" \
        "duckdb-extension-spatial==${DUCKDB_VERSION}" \
        "duckdb-extension-avro==${DUCKDB_VERSION}" \
        "numpy>=1.26"
fi

# Link every extension file the PyPI packages ship into DuckDB's extension folder (done on
# every call: $HOME may be fresh while the venv is reused).
mkdir -p "${EXT_DIR}"
find "${VENV_DIR}" -name '*.duckdb_extension*' -type f | while read -r ext; do
    ln -sf "$(cd "$(dirname "${ext}")" && pwd)/$(basename "${ext}")" "${EXT_DIR}/$(basename "${ext}")"
done
if ! ls "${EXT_DIR}"/spatial.duckdb_extension* >/dev/null 2>&1 \
    || ! ls "${EXT_DIR}"/avro.duckdb_extension* >/dev/null 2>&1; then
    echo "DuckDB extensions spatial/avro not found in ${VENV_DIR}; see ${EXT_DIR}" >&2
    exit 1
fi
touch "${STAMP}"
"${VENV_DIR}/bin/bqemulator" --help >/dev/null
