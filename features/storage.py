"""One resolver for warehouse, raw and export URIs: Spark's scheme, delta-rs/pyarrow's scheme and options.

    location = resolve("s3a://bucket/recpipe/warehouse", storage)   # storage: the config's `storage:` or None
    location.spark_uri     s3a://bucket/recpipe/warehouse      (Spark, Hadoop: s3a, abfss, gs, hdfs, file)
    location.arrow_uri     s3://bucket/recpipe/warehouse       (delta-rs, pyarrow: s3, az, gs, hdfs, local)
    location.storage_options   {"aws_endpoint_url": ..., ...}  (delta-rs's object_store keys)
    fs, path = location.filesystem()                           (pyarrow.fs: list, move, read, write)

Accepted spellings: s3://, s3a://, s3n:// (Amazon S3 and S3-compatible servers); gs://, gcs:// (Google
Cloud Storage); abfss://container@account.dfs.core.windows.net/path, abfs://..., az://container/path,
azure://container/path (Azure Data Lake Storage Gen2; az:// takes the account from
storage.options.azure_storage_account_name or AZURE_STORAGE_ACCOUNT_NAME); hdfs://namenode:port/path; a local
path or file://. Credentials never come from the config: delta-rs and pyarrow read the standard environment
variables (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN or an instance profile;
GOOGLE_APPLICATION_CREDENTIALS; AZURE_STORAGE_ACCOUNT_KEY or AZURE_CLIENT_ID/AZURE_CLIENT_SECRET/
AZURE_TENANT_ID). The endpoint and region come from the config (`storage.endpoint_url`, `storage.region`,
`storage.allow_http`) or AWS_ENDPOINT_URL / AWS_REGION (AWS_DEFAULT_REGION); `storage.options` adds any
other delta-rs storage option by its own name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Mapping
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from features.errors import PipelineInputError

# scheme as written -> (kind, Spark's scheme)
SCHEMES = {
    "s3": "s3",
    "s3a": "s3",
    "s3n": "s3",
    "gs": "gs",
    "gcs": "gs",
    "abfss": "az",
    "abfs": "az",
    "az": "az",
    "azure": "az",
    "hdfs": "hdfs",
    "file": "local",
}
SPARK_SCHEME = {"s3": "s3a", "gs": "gs", "az": "abfss", "hdfs": "hdfs"}
ARROW_SCHEME = {"s3": "s3", "gs": "gs", "az": "az", "hdfs": "hdfs"}
AZURE_HOST = ".dfs.core.windows.net"


@dataclass(frozen=True)
class Location:
    """A storage root: kind (local, s3, gs, az, hdfs), bucket (bucket, container or namenode authority),
    key (the path inside it, no leading or trailing slash; a local path is absolute)."""

    kind: str
    bucket: str
    key: str
    account: str | None = None  # Azure storage account
    options: Mapping[str, str] = field(default_factory=dict)  # delta-rs storage options

    @property
    def is_local(self) -> bool:
        return self.kind == "local"

    def child(self, *parts: str) -> "Location":
        key = "/".join(p.strip("/") for p in (self.key, *parts) if p.strip("/"))
        if self.is_local:
            key = "/" + key.lstrip("/")
        return Location(self.kind, self.bucket, key, self.account, self.options)

    @property
    def spark_uri(self) -> str:
        if self.is_local:
            return self.key
        if self.kind == "az":
            if not self.account:
                raise PipelineInputError(
                    f"az://{self.bucket}/{self.key}: no Azure storage account; write it as "
                    f"abfss://{self.bucket}@ACCOUNT{AZURE_HOST}/{self.key} or set "
                    f"storage.options.azure_storage_account_name"
                )
            return f"abfss://{self.bucket}@{self.account}{AZURE_HOST}/{self.key}".rstrip("/")
        return f"{SPARK_SCHEME[self.kind]}://{self.bucket}/{self.key}".rstrip("/")

    @property
    def arrow_uri(self) -> str:
        if self.is_local:
            return self.key
        return f"{ARROW_SCHEME[self.kind]}://{self.bucket}/{self.key}".rstrip("/")

    @property
    def storage_options(self) -> dict[str, str]:
        return dict(self.options)

    def filesystem(self) -> tuple[pafs.FileSystem, str]:
        """A pyarrow file system and this location's path in it."""
        if self.is_local:
            return pafs.LocalFileSystem(), self.key
        path = "/" + self.key if self.kind == "hdfs" else f"{self.bucket}/{self.key}".rstrip("/")
        return _filesystem(self.kind, self.bucket, tuple(sorted(self.options.items()))), path

    def spark_to_arrow(self, uri: str) -> str:
        """A URI below this root in any spelling, in delta-rs/pyarrow's."""
        return resolve(uri, options=self.options).arrow_uri

    def arrow_to_spark(self, uri: str) -> str:
        """A URI below this root as delta-rs lists it (s3://, az://, file://), in Spark's spelling."""
        if self.is_local:
            return uri.removeprefix("file://")
        return resolve(uri, options=self.options, account=self.account).spark_uri


def resolve(
    uri: str, storage: Any = None, *, options: Mapping[str, str] | None = None, account: str | None = None
) -> Location:
    """The Location of `uri`; `storage`: the config's StorageSettings (or a mapping like it) or None."""
    text = str(uri).strip()
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if not scheme or scheme == "file":
        local = text.removeprefix("file://").removeprefix("file:") if scheme else text
        return Location("local", "", os.path.abspath(local))
    if scheme not in SCHEMES:
        raise PipelineInputError(
            f"{text}: unsupported storage scheme {scheme}:// (use a local path, s3://, s3a://, "
            f"gs://, abfss://, az:// or hdfs://)"
        )
    kind = SCHEMES[scheme]
    parts = urlsplit(text)
    bucket, key = parts.netloc, parts.path.strip("/")
    if kind == "az" and "@" in bucket:
        bucket, host = bucket.split("@", 1)
        account = host.split(".", 1)[0]
    if not bucket:
        raise PipelineInputError(f"{text}: no bucket, container or host after {scheme}://")
    merged = dict(options) if options is not None else storage_options(kind, storage)
    if kind == "az":
        account = account or merged.get("azure_storage_account_name") or os.environ.get("AZURE_STORAGE_ACCOUNT_NAME")
        if account:
            merged.setdefault("azure_storage_account_name", account)
    return Location(kind, bucket, key, account, merged)


def storage_options(kind: str, storage: Any = None) -> dict[str, str]:
    """delta-rs storage options for a kind of store: the config's, then the standard environment variables."""
    if storage is None:
        config: Mapping[str, Any] = {}
    elif isinstance(storage, Mapping):
        config = storage
    else:
        config = storage.model_dump()
    options = {str(k): str(v) for k, v in (config.get("options") or {}).items()}
    if kind == "s3":
        endpoint = config.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL")
        region = config.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        allow_http = config.get("allow_http")
        if allow_http is None and endpoint:
            allow_http = endpoint.startswith("http://")
        for key, value in (
            ("aws_endpoint_url", endpoint),
            ("aws_region", region),
            ("aws_allow_http", None if allow_http is None else str(bool(allow_http)).lower()),
        ):
            if value is not None:
                options.setdefault(key, value)
    return options


@cache
def _filesystem(kind: str, bucket: str, options: tuple[tuple[str, str], ...]) -> pafs.FileSystem:
    settings = dict(options)
    if kind == "s3":
        endpoint = settings.get("aws_endpoint_url")
        arguments: dict[str, Any] = {"region": settings.get("aws_region") or "us-east-1"}
        if endpoint:
            parsed = urlsplit(endpoint)
            arguments.update(endpoint_override=parsed.netloc or endpoint, scheme=parsed.scheme or "https")
        key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
        if key and secret:
            arguments.update(access_key=key, secret_key=secret, session_token=os.environ.get("AWS_SESSION_TOKEN"))
        return pafs.S3FileSystem(**arguments)
    if kind == "gs":
        return pafs.GcsFileSystem()
    if kind == "az":
        return pafs.AzureFileSystem(
            account_name=settings.get("azure_storage_account_name"),
            account_key=os.environ.get("AZURE_STORAGE_ACCOUNT_KEY"),
        )
    if kind == "hdfs":
        host, _, port = bucket.partition(":")
        return pafs.HadoopFileSystem(host, int(port or 8020))
    raise PipelineInputError(f"no file system for {kind}")
