# The status table, exactly store/dynamo.py's TABLE (tests/test_iac.py compares them):
# hash feed_slug, range guid_key; GSI state-index (state, discovered_at), projection ALL;
# on demand. Episodes, feeds, the spend ledger and the freeze all live here.
resource "aws_dynamodb_table" "status" {
  name                        = var.status_table
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "feed_slug"
  range_key                   = "guid_key"
  deletion_protection_enabled = var.table_deletion_protection

  attribute {
    name = "feed_slug"
    type = "S"
  }
  attribute {
    name = "guid_key"
    type = "S"
  }
  attribute {
    name = "state"
    type = "S"
  }
  attribute {
    name = "discovered_at"
    type = "N"
  }

  global_secondary_index {
    name            = "state-index"
    hash_key        = "state"
    range_key       = "discovered_at"
    projection_type = "ALL"
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled = true
  }
}
