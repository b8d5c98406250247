"""mirror3d.serve_apps."""
