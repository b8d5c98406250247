"""The engine: training and evaluation loops that run in one process, with or without Ray (docs/architecture.md)."""
