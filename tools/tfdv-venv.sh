#!/usr/bin/env bash
# Creates (or reuses) TensorFlow Data Validation's own virtualenv, where the parity test and
# the validation benchmark run TFDV on the same CSV files as beamforge.
#
# The newest TFDV on the package registry for Python 3.11 is 1.16.1, and it pins
# tensorflow<2.17, pyarrow<11, pandas<2, numpy<2 (through tensorflow) and tfx-bsl<1.17: none of
# that can share a venv with the project's tensorflow 2.21, tensorflow-transform 1.21 and
# pyarrow 25. So TFDV runs as a separate process, as the BigQuery emulator and Airflow do.
# Pins: pyarrow 10.0.1 is the only 10.x with a cp311 wheel (left free, pip backtracks to the
# 10.0.0 sources, whose build fails); apache-beam 2.59.0 is the release TFX 1.16 was built
# with, and the newest whose pyarrow range still includes 10 (2.76+ need pyarrow>=14).
# pyfarmhash<0.4 and crcmod only ship sources: a C++ compiler and the Python headers are
# needed once, to build them.
#
# Usage: tools/tfdv-venv.sh [VENV_DIR]   (default: .venv/tfdv)
set -euo pipefail

VENV_DIR="${1:-.venv/tfdv}"
PYTHON="${PYTHON:-python3.11}"
TFDV_VERSION="1.16.1"
BEAM_VERSION="2.59.0"
PYARROW_VERSION="10.0.1"
# Bump the stamp name when the package list changes, so existing venvs are updated.
STAMP="${VENV_DIR}/.tfdv-${TFDV_VERSION}-beam-${BEAM_VERSION}-pyarrow-${PYARROW_VERSION}"

if [[ ! -f "${STAMP}" ]]; then
    test -x "${VENV_DIR}/bin/python" || "${PYTHON}" -m venv "${VENV_DIR}"
    "${VENV_DIR}/bin/python" -m pip install -q --upgrade pip
    "${VENV_DIR}/bin/python" -m pip install -q --prefer-binary \
        "tensorflow-data-validation==${TFDV_VERSION}" \
        "apache-beam[gcp]==${BEAM_VERSION}" \
        "pyarrow==${PYARROW_VERSION}" \
        "numpy<2"
    touch "${STAMP}"
fi
"${VENV_DIR}/bin/python" -c "import tensorflow_data_validation"
