"""Change capture, broker adapter and fan-out. Imports models, never schema or app."""
