"""guardian: a userspace early-OOM guardian daemon for Linux."""

__version__ = "0.1.0"
