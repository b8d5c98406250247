"""mirror3d.platform."""
