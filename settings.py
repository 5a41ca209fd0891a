"""The settings of one run: what it reads, how hard it optimizes, where it writes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from llm_access.config import LLMConfig


class RunSettings(BaseModel):
    """Everything that decides what a run computes; stored in run.json and checked on resume."""

    model_config = ConfigDict(extra="forbid")

    data_path: str = "data/sample_seed.jsonl"
    """HF dataset name or local .json/.jsonl/.csv/.parquet file."""
    split: str = "train"
    """Split of a HF dataset."""
    instruction_field: str = "instruction"
    """Column holding the instruction."""
    input_field: str | None = None
    """Optional Alpaca-style input column, appended to the instruction."""
    response_field: str | None = None
    """Optional original answer column, kept as `reference`."""
    train_size: int = 6
    """Rows (after shuffling) the optimizer may draw mini-batches from."""
    dev_size: int = 6
    """Rows, disjoint from train, on which candidate methods are scored."""
    seed: int = 42
    """Shuffle and mini-batch sampling seed."""
    batch_size: int = 3
    """Mini-batch size per optimization step (the paper uses 10)."""
    max_steps: int = 1
    """Optimization steps at most."""
    patience: int = 2
    """Stop after this many steps without a strictly better method."""
    loop: int = 2
    """Evolution levels (trajectory length and generation depth)."""
    candidate_size: int = 2
    """Candidate methods (m) sampled per step."""
    test_run: bool = False
    """Generate for the first 10 valid rows only."""
    save_path: str = "evolution_result"
    """Output directory."""
    method_file: str | None = None
    """Skip optimization and generate with this method."""
    diversity: list[str] = Field(default_factory=lambda: ["dedup"])
    """Diversity steps run on each level's survivors, in order: dedup, breadth, or module:function."""
    dedup_threshold: float = Field(0.8, gt=0.0, le=1.0)
    """Character n-gram Jaccard similarity at or above which two instructions are near-duplicates."""
    breadth_ratio: float = Field(0.2, ge=0.0, le=1.0)
    """Share of each level's survivors that inspire a brand-new instruction (breadth step)."""
    equality_check: bool = False
    """Ask the LLM whether each evolved instruction adds anything over its parent."""
    rules_path: str | None = None
    """Failure-rule YAML; None uses rules/failure_rules.yaml."""
    evol_llm: LLMConfig
    """Endpoint that evolves and answers instructions."""
    optim_llm: LLMConfig
    """Endpoint that analyses trajectories and rewrites the method."""

