"""A manifest.csv given to podrun (a local path or s3://): read it, and its rows as episode records."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit


class ManifestError(ValueError):
    """A manifest that cannot be read or has a bad row: one sentence naming the source (and line)."""


_S3_ERRORS = {
    "NoSuchBucket": "bucket {bucket} does not exist",
    "NoSuchKey": "bucket {bucket} has no object {key}",
    "404": "bucket {bucket} has no object {key}",
    "AccessDenied": "access denied",
    "403": "access denied",
    "InvalidAccessKeyId": "the AWS access key is not valid",
    "SignatureDoesNotMatch": "the AWS secret key does not match",
}


def read_manifest_source(source: str, s3_client: Callable[[], Any]) -> bytes:
    """A manifest from a local path or s3://bucket/key (``s3_client()``: a boto3 S3 client, made only for s3://).

    Anything that stops the read is one sentence naming the source (ManifestError).
    """
    what = f"cannot read manifest {source}"
    if source.startswith("s3://"):
        from botocore.exceptions import BotoCoreError, ClientError

        parts = urlsplit(source)
        bucket, key = parts.netloc, parts.path.lstrip("/")
        if not bucket or not key:
            raise ManifestError(f"{what}: an s3:// URI names a bucket and a key (s3://BUCKET/KEY)")
        try:
            return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            reason = _S3_ERRORS.get(code, "{message}").format(
                bucket=bucket, key=key, message=f"{code or 'S3 error'}: {error.get('Message') or exc}")
            raise ManifestError(f"{what}: {reason}")
        except BotoCoreError as exc:  # no credentials, endpoint unreachable, timeouts
            raise ManifestError(f"{what}: {exc}")
    try:
        return Path(source).read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"{what}: no such file")
    except IsADirectoryError:
        raise ManifestError(f"{what}: it is a folder, not a file")
    except OSError as exc:
        raise ManifestError(f"{what}: {exc.strerror or exc}")


def _manifest_number(value: str | None, column: str, source: str, line: int, *, whole: bool):
    """A manifest cell as a number (None when empty); one sentence when it is not one."""
    import math

    value = (value or "").strip()
    if not value:
        return None
    try:
        n = int(value) if whole else float(value)
    except ValueError:
        n = None
    if n is None or not math.isfinite(n) or n < 0:
        kind = "a whole number of bytes" if whole else "a number of seconds"
        raise ManifestError(f"{source} line {line}: {column} must be {kind}, not {value!r}")
    return n


def manifest_records(data: bytes, source: str):
    """The episodes of a manifest.csv (the columns discover writes); one sentence on bad input."""
    from podinsight_dagster.store.checkpoints import EpisodeRecord
    from podinsight_dagster.store.keys import EpisodeKey, InvalidKeyError

    try:
        text = data.decode("utf-8-sig")  # a manifest saved by a spreadsheet starts with a BOM
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"{source}: not a UTF-8 text file (byte 0x{data[exc.start]:02x} at offset {exc.start})")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        columns = set(reader.fieldnames or [])
        if not columns:
            raise ManifestError(f"{source}: empty manifest (no header line)")
        if "partition_key" not in columns and not {"feed_slug", "guid_key"} <= columns:
            raise ManifestError(f"{source}: no partition_key column (nor feed_slug and guid_key)")
        records = []
        for row in reader:
            line = reader.line_num
            cell = {k: (row.get(k) or "").strip() for k in ("partition_key", "feed_slug", "guid_key")}
            try:
                ek = EpisodeKey.parse(cell["partition_key"] or f"{cell['feed_slug']}/{cell['guid_key']}")
            except InvalidKeyError as exc:
                raise ManifestError(f"{source} line {line}: {exc}")
            records.append(EpisodeRecord(
                partition_key=ek.partition_key, feed_slug=ek.feed_slug, guid_key=ek.guid_key,
                guid=row.get("guid") or None, title=row.get("title") or None,
                enclosure_url=(row.get("enclosure_url") or "").strip() or None,
                enclosure_type=row.get("enclosure_type") or None,
                enclosure_length=_manifest_number(row.get("enclosure_length"), "enclosure_length", source, line,
                                                  whole=True),
                published=row.get("published") or None,
                duration_hint_sec=_manifest_number(row.get("duration_sec"), "duration_sec", source, line,
                                                   whole=False)))
    except csv.Error as exc:
        raise ManifestError(f"{source} line {reader.line_num}: not valid CSV ({exc})")
    return records
