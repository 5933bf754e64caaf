"""Example pipelines for the trigger, one folder each (see examples/churn/README.md)."""
