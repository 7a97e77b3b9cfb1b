"""Example workflows on simulated exchanges."""
