"""Transformer Lab: teach transformers with Taylor series."""

__version__ = "0.1.0"
