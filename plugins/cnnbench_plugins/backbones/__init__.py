"""Backbone plugins: one module per model family."""
