"""Chapters and search by meaning: sentence embeddings (int8 MiniLM, ONNX), topic boundaries, Podcasting 2.0 chapters."""
