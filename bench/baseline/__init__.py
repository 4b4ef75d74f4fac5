"""The textbook implementation the benchmark compares against (see app.py)."""
