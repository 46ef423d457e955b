"""Who spoke when: voice embeddings, clustering, speaker names from the feed (no dagster here)."""
