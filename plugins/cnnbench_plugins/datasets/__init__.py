"""Data-set plugins: one module per data set (its layout on disk and its protocol)."""
