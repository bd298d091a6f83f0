"""ralph: run LLM agents from declarative YAML recipes, inside hard limits."""

__version__ = "0.1.0"
