"""proctor: process-based parallelism from OS primitives."""

__version__ = "0.1.0"
