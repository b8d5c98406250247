"""Layer 0: the config engine and small utilities (atomic writes, run directories, checkpoints, fingerprints, the local-run environment, pictures)."""
