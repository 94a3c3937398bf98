"""voxserve: a self-hosted, OpenAI-compatible audio API on local models."""

__version__ = "0.1.0"
