"""Graph nodes: each reads the shared state (or a Send payload) and returns a partial update."""
