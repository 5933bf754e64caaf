"""retrain-trigger's development wing: what runs on a developer's machine, never in a function.

- :mod:`.cli`: the ``retrain-trigger`` command line;
- :mod:`.local`: the ``local`` backend (Kubeflow's local runner), its SQLite run ledger and the
  process that executes one run; registered with the core as the ``local`` backend through the
  ``retrain_trigger.backends`` entry point, so the core never imports it;
- :mod:`.localstack`: the whole loop on one machine (fake-gcs-server, the Pub/Sub emulator, both
  functions, the worker), its supervisor, the demo;
- :mod:`.replay`: subscription seek and bucket backfill;
- :mod:`.history`: ``why`` and ``decisions`` over the recorded decision history;
- :mod:`.packaging`: the deployable function zips (which hold the core, ``retrain_trigger``,
  whole, and nothing of this package);
- :mod:`.sampledata`: the digits data set as CSV shards.

This package imports the core; the core never imports this package (a test checks it).
"""
