"""The ``local`` backend: the compiled pipeline run by Kubeflow's local runner on this machine.

- :mod:`.backend`: :class:`~.backend.LocalBackend` (the Backend protocol) and the worker that
  executes queued runs;
- :mod:`.ledger`: the SQLite file every local process shares (runs, states, heartbeats);
- :mod:`.runner`: the process that executes one run and records its end.
"""
