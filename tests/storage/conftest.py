"""Fixtures of the storage tests: moto's S3 server on 127.0.0.1, a throwaway PostgreSQL (see s3_helpers.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from s3_helpers import bucket, postgres_url, s3_env, s3_server  # noqa: E402,F401 - pytest fixtures
