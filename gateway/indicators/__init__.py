"""Evaluation indicators computed from the store's attribute history (``jonction indicators``)."""
