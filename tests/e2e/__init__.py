"""The end-to-end suite: a QEMU guest with full systemd (see README.md in this directory)."""
