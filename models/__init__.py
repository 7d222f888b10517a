"""Failure predictor (spatio-temporal GNN), baselines, evaluation, explanations, anomaly detectors."""
