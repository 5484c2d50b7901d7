"""Every byte stylebatch reads or writes goes through here: local paths, file:// and s3://.

This package's namespace is the storage API; its modules hold one role each:

* ``dispatch``: the backend registry (``BACKENDS``), URI parsing and every object operation,
  handed to the backend of the URI's scheme;
* ``uri``: joining URIs, safe output keys (``output_uri``), comparing locations;
* ``parquet``: Parquet files and pyarrow filesystems on top of the object operations;
* ``base``: the errors, ``ParsedURI``, ``ObjectInfo`` and the ``Backend`` interface;
  ``local`` and ``s3``: the two backends.

* Every error is a StorageError subclass whose message is passed through :func:`redact`.
* S3 retries transient failures within one wall-clock budget (STYLEBATCH_IO_RETRY_SECONDS,
  default 30 s); see ``s3.py``.
* Fingerprints identify content: the ETag on S3, the sha256 of the bytes locally.
"""

from __future__ import annotations

from stylebatch.io.redact import redact
from stylebatch.io.storage.base import (
    AccessDeniedError, AlreadyExistsError, Backend, IsAFolderError, NotFoundError, ObjectInfo,
    ObjectTooLargeError, ParsedURI, PreconditionFailedError, StorageError, UnsafePathError,
    UnsupportedSchemeError
)
from stylebatch.io.storage.dispatch import (
    BACKENDS,
    create_exclusive,
    delete,
    delete_if_match,
    exists,
    list_dir,
    list_objects,
    parse_uri,
    read_bytes,
    read_with_fingerprint,
    replace_if_match,
    stat,
    supported_locations,
    uri_errors,
    write_bytes,
)
from stylebatch.io.storage.local import LocalBackend
from stylebatch.io.storage.parquet import (
    iter_parquet_tables,
    pyarrow_filesystem,
    read_parquet_metadata,
    read_parquet_table,
    write_parquet_table,
)
from stylebatch.io.storage.s3 import S3Backend, get_s3_client
from stylebatch.io.storage.uri import absolute, is_relative, is_within, join, output_uri

__all__ = [
    "BACKENDS",
    "Backend",
    "StorageError",
    "NotFoundError",
    "AccessDeniedError",
    "UnsupportedSchemeError",
    "UnsafePathError",
    "ObjectTooLargeError",
    "IsAFolderError",
    "PreconditionFailedError",
    "AlreadyExistsError",
    "ParsedURI",
    "ObjectInfo",
    "parse_uri",
    "uri_errors",
    "supported_locations",
    "read_bytes",
    "write_bytes",
    "exists",
    "stat",
    "list_objects",
    "list_dir",
    "join",
    "output_uri",
    "is_relative",
    "is_within",
    "absolute",
    "delete",
    "read_with_fingerprint",
    "create_exclusive",
    "replace_if_match",
    "delete_if_match",
    "redact",
    "get_s3_client",
    "LocalBackend",
    "S3Backend",
    "pyarrow_filesystem",
    "read_parquet_table",
    "read_parquet_metadata",
    "iter_parquet_tables",
    "write_parquet_table",
]
