"""``python -m mirror3d <command> --help`` (also the ``mirror3d`` console script)."""

from mirror3d.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
