"""Evaluation: encode a split with a trained model and score retrieval on it."""
