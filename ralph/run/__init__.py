"""Executing a recipe: scheduling, limits, retries and outputs."""
