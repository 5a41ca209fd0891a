"""The workflow graph and its subgraphs: one per candidate of a step, one per generation level."""

from langgraph.types import RetryPolicy

# The nodes already retry what is transient per LLM call; a node-level retry only
# repeats whole nodes on unexpected I/O trouble, never on user or logic errors.
NODE_RETRY = RetryPolicy(max_attempts=2, retry_on=(OSError,))
