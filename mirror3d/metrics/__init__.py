"""mirror3d.metrics."""
