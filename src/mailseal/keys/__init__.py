"""Key files and key lifecycle (application code, not a stable library API)."""
