"""Gates: what stands between a planned RunRequest and its submission.

- :mod:`.concurrency`: ``skip_if_running`` and ``queue_latest``, one run per route at a time
  (reserve the route's run slot, hold or queue, settle after the create, start the queued run);
- :mod:`.windows`: ``mode: window`` data routes, one run per batch of objects (add an object to
  the open window; flush: claim, manifest, submit, close; sweep what expired).

Each is plain functions over the state store, the backend and a clock, all passed in as
arguments; none keeps state of its own or reaches into the Service.
"""
