"""Generation on a Ray cluster (--workers N, --ray-address): see workers.py; shards.py holds the Ray-free parts."""


class WorkerLost(RuntimeError):
    """A Ray worker or the cluster went away mid-level; what was written stays, and a rerun resumes."""
