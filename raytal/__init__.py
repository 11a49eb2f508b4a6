"""raytal: pseudo-label self-training for temporal action localization, distributed with Ray."""

__version__ = "0.1.0"
