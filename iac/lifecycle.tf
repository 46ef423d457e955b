# The run-book's three buckets (§2) and the ALL-IN roll-up bucket (§8, archive_rollup's Parquet):
# private, encrypted, TLS only, and a lifecycle that aborts multipart uploads a killed task left
# behind (S3ObjectStore aborts its own failures; this is the backstop; DuckDB writes the roll-up
# in parts).
#
# Versioning: off for raw (audio is re-fetchable and large: a re-download would keep a second
# copy), on for stage (transcripts cost GPU time to remake), manifests (the record of what
# each run was asked to do) and all-in (each roll-up rewrites a feed's files: a bad one can be
# rolled back; small), with old versions expiring. The code's conditional writes
# (If-None-Match, If-Match on meta.json) work with versioning on or off.

locals {
  buckets = {
    raw       = { name = var.raw_bucket, versioned = false, noncurrent_days = 0 }
    stage     = { name = var.stage_bucket, versioned = true, noncurrent_days = 30 }
    manifests = { name = var.manifest_bucket, versioned = true, noncurrent_days = 90 }
    archive   = { name = var.archive_bucket, versioned = true, noncurrent_days = 30 }
  }
}

resource "aws_s3_bucket" "this" {
  for_each = local.buckets
  bucket   = each.value.name
}

resource "aws_s3_bucket_public_access_block" "this" {
  for_each                = local.buckets
  bucket                  = aws_s3_bucket.this[each.key].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_versioning" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id
  versioning_configuration {
    status = each.value.versioned ? "Enabled" : "Suspended"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  for_each   = local.buckets
  bucket     = aws_s3_bucket.this[each.key].id
  depends_on = [aws_s3_bucket_versioning.this]

  rule {
    id     = "abort-incomplete-multipart-upload"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  dynamic "rule" {
    for_each = each.value.versioned ? [1] : []
    content {
      id     = "expire-noncurrent-versions"
      status = "Enabled"
      filter {}
      noncurrent_version_expiration {
        noncurrent_days = each.value.noncurrent_days
      }
    }
  }
}

# TLS only.
resource "aws_s3_bucket_policy" "this" {
  for_each   = local.buckets
  bucket     = aws_s3_bucket.this[each.key].id
  depends_on = [aws_s3_bucket_public_access_block.this]
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "DenyInsecureTransport"
      Effect    = "Deny"
      Principal = "*"
      Action    = "s3:*"
      Resource  = [aws_s3_bucket.this[each.key].arn, "${aws_s3_bucket.this[each.key].arn}/*"]
      Condition = { Bool = { "aws:SecureTransport" = "false" } }
    }]
  })
}
