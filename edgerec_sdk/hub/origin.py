"""External origins: bundle files served by an object store or a CDN instead of the hub (extra ``[origin]``).

``edgerec publish BUNDLE --origin s3://bucket/prefix`` uploads every file of the bundle to
``s3://bucket/prefix/<version>/<name>`` with boto3, then publishes only the manifest (and signature) to the hub,
naming the base URL where edges fetch the files (``--origin-url``, default the endpoint's path-style URL of
the prefix). The hub answers that base in the ``X-Edgerec-Origin`` header of the manifest; edges download
from it and verify every file's sha256 against the signed manifest exactly as for the hub: an origin is never
trusted, and never sees the edge token.

Everything an upload needs is checked before anything is sent: boto3 installed, credentials found, the bucket
exists and is reachable. Each failure is one :class:`~edgerec_sdk.errors.ConfigError` naming what to fix;
boto3's exceptions are translated here, and only here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .._impl.optional import require
from ..errors import ConfigError
from ..sync.config import check_origin_url

__all__ = ["S3Origin", "check_origin_url"]

logger = logging.getLogger(__name__)


class S3Origin:
    """An S3 (or S3-compatible) bucket prefix that bundle files are uploaded to.

    Args:
        uri: ``s3://bucket/prefix``.
        endpoint_url: an S3-compatible endpoint (MinIO, moto, R2, ...); default boto3's (``AWS_ENDPOINT_URL``).
        public_url: where edges fetch ``<prefix>/<version>/<name>`` (a CDN); default the endpoint's
            path-style URL ``<endpoint>/<bucket>/<prefix>``.
        acl: a canned ACL for each object (``public-read`` when edges read the bucket directly).

    Raises:
        ConfigError: a bad URI, boto3 missing, no credentials, a bucket that does not exist or cannot be
            reached (checked here, at start, before any upload).
    """

    def __init__(self, uri: str, *, endpoint_url: str | None = None, public_url: str | None = None,
                 acl: str | None = None) -> None:
        parts = urlsplit(uri)
        if parts.scheme != "s3" or not parts.netloc or parts.query:
            raise ConfigError(f"--origin must look like s3://bucket/prefix, not {uri[:80]!r}")
        self.bucket, self.prefix = parts.netloc, parts.path.strip("/")
        self.acl = acl
        boto3 = require("boto3", extra="origin")
        botocore = require("botocore.exceptions", extra="origin")
        session = boto3.session.Session()
        if session.get_credentials() is None:
            raise ConfigError(f"origin s3://{self.bucket}: no AWS credentials found (set AWS_ACCESS_KEY_ID and "
                              "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run with an instance role)")
        self._errors = (botocore.BotoCoreError, botocore.ClientError)
        try:
            self._s3 = session.client("s3", endpoint_url=endpoint_url)
            self._s3.head_bucket(Bucket=self.bucket)
        except self._errors as exc:
            raise ConfigError(f"origin s3://{self.bucket}: {_describe(exc)}") from exc
        endpoint = str(self._s3.meta.endpoint_url).rstrip("/")
        base = public_url or "/".join(p for p in (endpoint, self.bucket, self.prefix) if p)
        self.public_url = check_origin_url(base, allow_insecure_http=True)  # edges apply their own rule

    def key(self, version: str, name: str) -> str:
        return "/".join(p for p in (self.prefix, version, name) if p)

    def upload(self, bundle_dir: Path, version: str, names: Iterable[str]) -> str:
        """Upload ``names`` of ``bundle_dir`` (streamed, multipart when large); return the version's base URL."""
        extra: dict[str, Any] = {"ContentType": "application/octet-stream"}
        if self.acl:
            extra["ACL"] = self.acl
        for name in names:
            try:
                self._s3.upload_file(str(bundle_dir / name), self.bucket, self.key(version, name), ExtraArgs=extra)
            except (*self._errors, OSError) as exc:
                raise ConfigError(f"origin upload of {name} failed: {_describe(exc)}") from exc
            logger.info("origin: uploaded s3://%s/%s", self.bucket, self.key(version, name))
        return f"{self.public_url}/{version}"


def _describe(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    code = str(((response or {}).get("Error") or {}).get("Code", "")) if isinstance(response, dict) else ""
    if code in ("404", "NoSuchBucket"):
        return "the bucket does not exist"
    if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return f"access denied ({code}): check the credentials and the bucket policy"
    return f"{type(exc).__name__}: {str(exc)[:200]}"
