"""A churn classifier retrained on each batch window of CSV shards (see README.md here).

- :mod:`.load_window`: ``load-window``, the trigger's window manifest to a train/test split
- :mod:`.train`: ``train-classifier``, a scikit-learn random forest
- :mod:`.evaluate_register`: ``evaluate-and-register``, ROC AUC, the gate, the champion pointer
- :mod:`.pipeline`: the DAG (``churn-training``) and :func:`~.pipeline.compile_pipeline`
- :mod:`.sample_data`: ``python -m examples.churn.sample_data DEST``, generated CSV shards
"""
