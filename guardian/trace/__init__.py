"""Record the machine as guardian reads it, and replay the recording through a policy.

``record`` reads, through a Host that notes every answer (hosts.RecordingHost), the files the
daemon's ticks read, and writes them as frames of a trace (fileformat: gzip'd JSON lines, each
frame holding only what changed; docs/trace.md). ``replay`` rebuilds the machine of each frame
in memory (hosts.TraceHost) and drives the daemon's own Engine over it in dry-run mode, with the
recorded clock: the decisions printed are the daemon's, by the same code.
"""
