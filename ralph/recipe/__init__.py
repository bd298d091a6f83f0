"""Recipes: load (YAML with positions) → schema → semantic checks → typed model."""
