"""Agents' back ends behind one small Protocol; `base` holds the shared types."""
