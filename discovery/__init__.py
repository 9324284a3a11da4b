"""Discovery plugins: report endpoints of other nodes to the hub."""
