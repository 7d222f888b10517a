"""Vendor-hosted coordinator: Flower ServerApp, model registry, encrypted benchmark queries."""
