"""The run-book's buckets on S3: an ObjectStore over boto3 whose objects appear only when whole.

* Every write carries a SHA-256 checksum that S3 verifies (single PUT, or each part
  of a multipart upload and the whole), so a corrupted upload is refused, not stored.
* Large files go up in parts; a failed upload is aborted, so no part lingers (the
  lifecycle rule AbortIncompleteMultipartUpload is the backstop for killed tasks).
* ``put_bytes_if_absent`` is a create-only write (``If-None-Match: *``) for keys two
  writers could race for; ``get_json_versioned`` / ``put_json_if`` are a
  compare-and-swap on the ETag (``If-Match``) for ``meta.json``'s transcript_key patch.
* Throttling (SlowDown, 503) is retried by botocore's adaptive retry mode, set on the
  client where it is built (services.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

from botocore.exceptions import ClientError

from podinsight_dagster.store.objects import ConcurrentUpdate, JsonMixin, ObjectNotFound

PART_SIZE = 16 << 20          # 16 MiB parts: 1 GB (the audio cap) is 64 parts, far below S3's 10,000
MULTIPART_THRESHOLD = 32 << 20


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _missing(exc: ClientError) -> bool:
    return _code(exc) in ("404", "NoSuchKey", "NotFound") or _status(exc) == 404


def _precondition_failed(exc: ClientError) -> bool:
    return _code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict") or _status(exc) in (409, 412)


class S3ObjectStore(JsonMixin):
    """A bucket as an S3 bucket: ``s3://<bucket>/<key>``."""

    def __init__(self, client, bucket: str, name: str | None = None):
        self.client = client
        self.bucket = bucket
        self.name = name or bucket

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _head(self, key: str) -> dict:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _missing(exc):
                raise ObjectNotFound(self.uri(key)) from exc
            raise

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except ObjectNotFound:
            return False
        return True

    def size(self, key: str) -> int:
        return int(self._head(key)["ContentLength"])

    def _get(self, key: str) -> dict:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _missing(exc):
                raise ObjectNotFound(self.uri(key)) from exc
            raise

    def get_bytes(self, key: str) -> bytes:
        return self._get(key)["Body"].read()

    def _put(self, key: str, data: bytes, content_type: str | None, **conditions: str) -> dict:
        extra = {"ContentType": content_type} if content_type else {}
        return self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ChecksumAlgorithm="SHA256",
                                      **extra, **conditions)

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        self._put(key, data, content_type)

    def put_bytes_if_absent(self, key: str, data: bytes, content_type: str | None = None) -> bool:
        """Create ``key`` only if no object is there; False when another writer was first."""
        try:
            self._put(key, data, content_type, IfNoneMatch="*")
        except ClientError as exc:
            if _precondition_failed(exc):
                return False
            raise
        return True

    def get_json_versioned(self, key: str) -> tuple[dict, str]:
        obj = self._get(key)
        return json.loads(obj["Body"].read()), obj["ETag"]

    def put_json_if(self, key: str, obj: object, version: str) -> None:
        """Replace ``key`` only if it is still the version read; else raise ConcurrentUpdate."""
        data = json.dumps(obj, indent=2, ensure_ascii=False).encode() + b"\n"
        try:
            self._put(key, data, "application/json", IfMatch=version)
        except ClientError as exc:
            if _precondition_failed(exc):
                raise ConcurrentUpdate(f"{self.uri(key)} changed since it was read") from exc
            raise

    def put_file(self, key: str, src: Path, content_type: str | None = None) -> None:
        src = Path(src)
        size = src.stat().st_size
        if size <= MULTIPART_THRESHOLD:
            self._put(key, src.read_bytes(), content_type)
            return
        extra = {"ContentType": content_type} if content_type else {}
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, ChecksumAlgorithm="SHA256",
                                                     **extra)
        upload_id = upload["UploadId"]
        try:
            parts = []
            with open(src, "rb") as fh:
                for number in range(1, (size + PART_SIZE - 1) // PART_SIZE + 1):
                    part = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                   PartNumber=number, Body=fh.read(PART_SIZE),
                                                   ChecksumAlgorithm="SHA256")
                    parts.append({"PartNumber": number, "ETag": part["ETag"],
                                  "ChecksumSHA256": part["ChecksumSHA256"]})
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                  MultipartUpload={"Parts": parts})
        except BaseException:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise

    def list_keys(self, prefix: str = "", start_after: str = "") -> Iterator[str]:
        extra = {"StartAfter": start_after} if start_after else {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix, **extra):
            for obj in page.get("Contents", []):
                yield obj["Key"]

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        """The object in a temporary file (transcription reads audio by path), removed afterwards."""
        fd, name = tempfile.mkstemp(prefix=".tmp-s3-", suffix=Path(key).suffix)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as fh:
                body = self._get(key)["Body"]
                for chunk in iter(lambda: body.read(1 << 20), b""):
                    fh.write(chunk)
            yield path
        finally:
            path.unlink(missing_ok=True)
