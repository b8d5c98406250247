"""mirror3d.models.casl."""
