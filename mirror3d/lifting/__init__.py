"""mirror3d.lifting."""
