"""infrabrain: predicts GPU-cluster failures an hour ahead without any site sharing raw telemetry."""

__version__ = "0.1.0"
