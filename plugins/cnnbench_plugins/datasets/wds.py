"""`wds:` data sets (being written; registers nothing yet)."""
