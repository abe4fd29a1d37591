"""Head plugins: what is fitted on frozen features, and how it is scored."""
