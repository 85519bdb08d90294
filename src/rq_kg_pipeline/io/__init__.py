"""File writing that never leaves a half-written artifact behind."""
