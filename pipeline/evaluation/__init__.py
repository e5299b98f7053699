"""Evaluation: word error rate and independent judges, and the held-out evaluation sets."""
