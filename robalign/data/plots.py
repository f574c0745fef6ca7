"""Plots a person would rather look at than read: one headless matplotlib for all of them."""

from __future__ import annotations


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display here or on a headless workstation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
