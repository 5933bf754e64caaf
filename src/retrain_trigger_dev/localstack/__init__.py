"""The local stack: the whole continuous-training loop on one machine, with no cloud account.

- :mod:`.stack`: :class:`~.stack.Stack` starts fake-gcs-server, the Pub/Sub emulator (or a
  bucket poller), both functions under functions-framework and the local pipeline worker;
- :mod:`.supervisor`: process supervision (process groups, health waits, clean stop);
- :mod:`.poller`, :mod:`.objects`: Eventarc-style delivery without Pub/Sub;
- :mod:`.ticker`: the stand-in for Cloud Scheduler's ``POST /flush``;
- :mod:`.worker`: the process that runs the local backend's queued runs;
- :mod:`.demo`, :mod:`.commands`: ``retrain-trigger up | demo | runs | replay``.
"""
