"""mirror3d.models."""
