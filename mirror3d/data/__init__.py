"""mirror3d.data."""
