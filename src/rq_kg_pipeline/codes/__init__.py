"""Entity code tables: what extraction writes and every later stage reads."""
