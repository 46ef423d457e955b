"""Domain logic of Pod-Insight. Nothing in this package may import dagster."""
