"""Transport plugins: move opaque frames between nodes; the core does the rest."""
