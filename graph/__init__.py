"""The workflow graph and its generation subgraph."""
