"""The google-cloud-bigquery client: emulator-aware, with bounded retries and waits.

Clients honour ``BIGQUERY_EMULATOR_HOST`` (REST) as the Google client libraries do for
emulators: anonymous credentials, plain HTTP. The client library is imported when a client is
made, not with this module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

__all__ = ["TIMEOUT", "default_retry", "make_client", "run_query"]

# Bounded waits: a client retries some failures for up to 10 minutes by default.
TIMEOUT = 60.0


def make_client(project: str) -> Any:
    """A google-cloud-bigquery client; anonymous against ``BIGQUERY_EMULATOR_HOST``."""
    from google.cloud import bigquery

    host = os.environ.get("BIGQUERY_EMULATOR_HOST")
    if host:
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials

        return bigquery.Client(
            project=project,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=host),
        )
    return bigquery.Client(project=project)


def default_retry() -> Any:
    """The client's default retry, cut to :data:`TIMEOUT`."""
    from google.cloud import bigquery

    return bigquery.DEFAULT_RETRY.with_deadline(TIMEOUT)


def run_query(client: Any, sql: str, params: Mapping[str, str]) -> Any:
    """Runs a query with DATE parameters and waits (bounded) for its result."""
    from google.cloud import bigquery

    config = bigquery.QueryJobConfig(
        query_parameters=[bigquery.ScalarQueryParameter(k, "DATE", v) for k, v in params.items()]
    )
    job = client.query(sql, job_config=config, retry=default_retry(), timeout=TIMEOUT)
    return job.result(timeout=TIMEOUT * 10)
