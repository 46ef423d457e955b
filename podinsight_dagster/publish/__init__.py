"""Giving results back to publishers: Podcasting 2.0 tags for their feeds."""
