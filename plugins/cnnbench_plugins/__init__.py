"""cnnbench's first-party plugins. Each module is registered through the ``cnnbench`` entry-point
group in pyproject.toml, exactly as a third-party package would register its own."""
