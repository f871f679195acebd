#!/usr/bin/env bash
# Creates (or reuses) Airflow's own virtualenv, where compiled chain DAGs are imported and run.
#
# Airflow's Google provider cannot share a venv with tensorflow-transform (providers-google
# needs google-api-python-client>=2.194, tfx-bsl 1.21 needs <2), and Airflow is a server
# anyway: it gets a venv of its own, as Cloud Composer gives it an environment of its own.
# The Dataflow operators also need the Apache Beam provider, or a DAG using them fails to
# import. Tasks of a local-target DAG run the project's code in the project's venv.
#
# Usage: tools/airflow-venv.sh [VENV_DIR]   (default: .venv/airflow)
set -euo pipefail

VENV_DIR="${1:-.venv/airflow}"
PYTHON="${PYTHON:-python3.11}"
AIRFLOW_VERSION="3.3.2"
GOOGLE_PROVIDER_VERSION="22.8.0"
BEAM_PROVIDER_VERSION="6.3.1"
# Bump the stamp name when the package list changes, so existing venvs are updated.
STAMP="${VENV_DIR}/.airflow-${AIRFLOW_VERSION}-google-${GOOGLE_PROVIDER_VERSION}-beam-${BEAM_PROVIDER_VERSION}"

if [[ ! -f "${STAMP}" ]]; then
    test -x "${VENV_DIR}/bin/python" || "${PYTHON}" -m venv "${VENV_DIR}"
    "${VENV_DIR}/bin/python" -m pip install -q --upgrade pip
    "${VENV_DIR}/bin/python" -m pip install -q \
        "apache-airflow==${AIRFLOW_VERSION}" \
        "apache-airflow-providers-google==${GOOGLE_PROVIDER_VERSION}" \
        "apache-airflow-providers-apache-beam==${BEAM_PROVIDER_VERSION}"
    touch "${STAMP}"
fi
"${VENV_DIR}/bin/python" -c "import airflow, airflow.providers.google, airflow.providers.apache.beam"
