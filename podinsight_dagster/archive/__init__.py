"""The archive: SQL over the stage layout, a full-text search index, the Parquet roll-up and the HTML report."""
