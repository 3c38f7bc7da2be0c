"""The loop's Poller: epoll, registered the way poll() was (guardian/daemon/wakeups.py)."""

from __future__ import annotations

import os
import select
from pathlib import Path

import pytest

from guardian.daemon.wakeups import Poller


def test_a_ready_descriptor_wakes_it_and_a_quiet_one_times_out() -> None:
    poller = Poller()
    read_end, write_end = os.pipe()
    try:
        poller.register(read_end, select.POLLIN)
        assert poller.poll(0) == []
        os.write(write_end, b"x")
        assert poller.poll(1000) == [(read_end, select.POLLIN)]
        os.read(read_end, 1)
        assert poller.poll(10) == []
        poller.unregister(read_end)
        os.write(write_end, b"x")
        assert poller.poll(0) == []
    finally:
        os.close(read_end)
        os.close(write_end)


def test_registering_again_changes_the_events() -> None:
    poller = Poller()
    read_end, write_end = os.pipe()
    try:
        poller.register(write_end, select.POLLPRI)
        assert poller.poll(0) == []
        poller.register(write_end, select.POLLOUT)  # poll() allowed it: so does this
        assert poller.poll(0) == [(write_end, select.POLLOUT)]
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_number_closed_and_handed_out_again_is_the_new_file() -> None:
    """A kill's pidfd is closed by the kill; the next file opened may get its number and be
    registered under it: its events must come, not the closed file's silence."""
    poller = Poller()
    first_read, first_write = os.pipe()
    poller.register(first_read, select.POLLIN)
    os.close(first_read)
    os.close(first_write)
    read_end, write_end = os.pipe()
    try:
        assert read_end == first_read  # the lowest free number: the one just closed
        poller.register(read_end, select.POLLIN)
        os.write(write_end, b"x")
        assert poller.poll(1000) == [(read_end, select.POLLIN)]
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_regular_file_asked_for_pollpri_never_fires(tmp_path: Path) -> None:
    """A fixture tree's memory.events is a regular file, which epoll refuses: asked for POLLPRI
    it is accepted and never fires, as under poll(); asked for more it is an error."""
    path = tmp_path / "memory.events"
    path.write_text("oom_kill 0\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        poller = Poller()
        poller.register(fd, select.POLLPRI)
        assert poller.poll(10) == []
        with pytest.raises(PermissionError):
            poller.register(fd, select.POLLIN)
        with pytest.raises(OSError):
            poller.unregister(fd)
    finally:
        os.close(fd)


def test_unregistering_what_is_not_registered_raises_oserror() -> None:
    poller = Poller()
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(OSError):
            poller.unregister(read_end)
    finally:
        os.close(read_end)
        os.close(write_end)
