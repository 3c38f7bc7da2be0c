"""The daemon, by concern, data flowing one way:

* ``engine.py``: one tick at a time, sample -> assess -> choose -> act, and the kills in flight
  as state (testable alone with a fake root and a fake clock);
* ``wakeups.py``: which kernel events the watched conditions need (a plan, a value) and the
  Waiter that arms it and sleeps on it;
* ``service.py``: ``guardian run``, the loop that joins them, with signals, sd_notify, the
  watchdog and reload.
"""
