"""Where state lives: episode keys, the bucket layout, object stores, checkpoints and metrics."""
