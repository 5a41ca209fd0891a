"""The --dry-run plan: LLM calls per phase and an estimate of tokens and cost, before any call.

Calls are counted from the sizes as an upper bound: no instruction fails, so every one
is evolved and answered at every level. Tokens are estimated from the data's length:
about 4 characters per token for Latin text and 1 per token for Hangul (tokenizers of
most open models split Korean finely); prompts add the template around the instruction;
an evolution answer is estimated at the four-section format (about 3 times the
instruction plus 120 tokens), an answer at half of max_tokens.

A `reasoning: true` config adds a quarter of its max_tokens of reasoning to every call's
output (a thinking model's reasoning varies with the task far more than its answer).
Prompt-cache hits are estimated from the shared method prefix: every evolve prompt
starts with the method, so each evolve call after the first with a method repeats it.
Providers cache in blocks and evict, so the real share is lower; the table's cost prices
all input as uncached and the cached estimate is printed below it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from llm_access.config import LLMConfig

from failure_checks.preflight import optimizes
from method_selection.race import race_rounds, simulate_step
from nodes.validator import race_rule
from settings import RunSettings
from failure_checks.rules import hangul_ratio
from llm_tasks.templates import fill, initial_method


def estimate_tokens(text: str) -> int:
    """Rough token count: Hangul about 1 character per token, other text about 4."""
    hangul = hangul_ratio(text)
    return max(1, round(len(text) * (hangul / 1.0 + (1 - hangul) / 4.0)))


@dataclass
class PhasePlan:
    """One phase's planned calls and estimated tokens."""

    phase: str
    calls: int
    input_tokens: int
    output_tokens: int
    """Reasoning included."""
    config: LLMConfig
    reasoning_tokens: int = 0
    cached_input_tokens: int = 0
    """Input tokens likely served from the endpoint's prompt cache (the method prefix)."""


REASONING_SHARE_OF_MAX_TOKENS = 0.25


def reasoning_per_call(config: LLMConfig) -> float:
    return config.max_tokens * REASONING_SHARE_OF_MAX_TOKENS if config.reasoning else 0.0


def with_reasoning(plan: PhasePlan) -> PhasePlan:
    """The phase with its config's estimated reasoning added to the output."""
    reasoning = round(plan.calls * reasoning_per_call(plan.config))
    plan.reasoning_tokens, plan.output_tokens = reasoning, plan.output_tokens + reasoning
    return plan


def plan_run(settings: RunSettings, seed_instructions: list[str]) -> list[PhasePlan]:
    """Calls and tokens per phase for these settings and this generation set."""
    mean_instruction = sum(map(estimate_tokens, seed_instructions)) / max(1, len(seed_instructions))
    method_tokens = estimate_tokens(initial_method())
    evolve_in = method_tokens + estimate_tokens(fill("evolve", method="", instruction="")) + mean_instruction
    evolve_out = 3 * mean_instruction + 120
    respond_out = settings.evol_llm.max_tokens / 2
    steps, m, loop = settings.max_steps, settings.candidate_size, settings.loop
    optimizing = not settings.method_file and steps > 0
    trajectory_calls = steps * settings.batch_size * loop if optimizing else 0
    validations = (steps * m + 1) * settings.dev_size if optimizing else 0
    analysis_in = method_tokens + settings.batch_size * (loop + 1) * (mean_instruction * 2) + 300
    rows = len(seed_instructions) * (1 + settings.breadth_ratio * ("breadth" in settings.diversity))
    judge_in = estimate_tokens(fill("judge_response", instruction="", response="")) + mean_instruction + respond_out
    methods_validated = steps * m + 1 if optimizing else 0
    generation_evolves = round(rows * loop)
    plans = [
        PhasePlan("optimization: evolve trajectories", trajectory_calls, round(trajectory_calls * evolve_in),
                  round(trajectory_calls * evolve_out), settings.evol_llm,
                  cached_input_tokens=round(max(0, trajectory_calls - steps) * method_tokens) if optimizing else 0),
        PhasePlan("optimization: analyze", steps * m if optimizing else 0, round(steps * m * analysis_in),
                  round(steps * m * 400), settings.optim_llm),
        PhasePlan("optimization: optimize", steps * m if optimizing else 0, round(steps * m * (method_tokens + 700)),
                  round(steps * m * (method_tokens + 100)), settings.optim_llm),
        PhasePlan("optimization: validate (evolve + answer)", 2 * validations,
                  round(validations * (evolve_in + 2 * mean_instruction)), round(validations * (evolve_out + respond_out)),
                  settings.evol_llm, cached_input_tokens=round(max(0, validations - methods_validated) * method_tokens)),
        PhasePlan("generation (evolve + answer, all levels)", round(2 * rows * loop),
                  round(rows * loop * (evolve_in + 2 * mean_instruction)), round(rows * loop * (evolve_out + respond_out)),
                  settings.evol_llm, cached_input_tokens=round(max(0, generation_evolves - 1) * method_tokens)),
        *_judge_plans(settings, validations, rows * loop, judge_in),
    ]
    return [with_reasoning(plan) for plan in plans]


def _judge_plans(settings: RunSettings, validations: int, generated: float, judge_in: float) -> list[PhasePlan]:
    """The failure judge's calls: at most one per item per stage (evolution, answer), where it is on."""
    plans = []
    if settings.failure_judge in ("dev", "all"):
        plans.append(PhasePlan("optimization: failure judge", 2 * validations, round(2 * validations * judge_in),
                               round(2 * validations * 8), settings.evol_llm))
    if settings.failure_judge == "all":
        plans.append(PhasePlan("generation: failure judge", round(2 * generated), round(2 * generated * judge_in),
                               round(2 * generated * 8), settings.evol_llm))
    return plans


def expected_step_items(settings: RunSettings, rate: float = 0.2, trials: int = 20) -> float:
    """Dev items one step's candidates are expected to be scored on before their stop rules end them (issue 21).

    Modelled on candidates as good as the kept method, all failing `rate` of the items
    independently (the selection bench's e0): the common case, and the costly one for a race,
    since neither "better" nor "worse" comes quickly. Seeded, so a plan is the same every time.
    """
    m, pool = settings.candidate_size, settings.dev_size
    if race_rule(settings).selection == "full":
        return float(m * pool)
    rule, rng, items = race_rule(settings), random.Random(0), 0
    for _ in range(trials):
        bar = [rng.random() < rate for _ in range(pool)]
        items += sum(r.items for r, _ in simulate_step(rule, bar, lambda _candidate, _item: rng.random() < rate, m))
    return items / trials


def validation_note(settings: RunSettings) -> str:
    """The dry run's line on validation calls under --selection: the upper bound and an expected figure."""
    if not optimizes(settings):
        return ""
    steps, m, pool = settings.max_steps, settings.candidate_size, settings.dev_size
    per_step, selection = expected_step_items(settings), race_rule(settings).selection
    if selection == "race":
        rounds = race_rounds(pool, m)
        # Every round's candidates to its end, then an adopted method's held-out items.
        alive, start, per_step_upper = m, 0, 0
        for limit, keep in rounds:
            per_step_upper, alive, start = per_step_upper + alive * (limit - start), keep, limit
        upper = 2 * (steps * (per_step_upper + pool) + pool)
        scope = (f"every candidate on the heat of {rounds[0][0]} items, the better half on to each next round, "
                 f"an adopted method on all {pool}")
    else:
        upper, scope = 2 * (steps * m + 1) * pool, f"every candidate on all {pool} dev items"
    expected = round(2 * (steps * per_step + pool))
    return (f"validation under --selection {selection}: at most {upper} calls ({scope}); expected about "
            f"{expected}, if candidates are as good as the kept method (about {per_step / m:.0f} of {pool} items "
            f"per candidate, the kept method on all of them)")


def format_plan(plans: list[PhasePlan]) -> str:
    """A table of the plan, with totals and cost where the configs have prices."""
    lines = [f"{'phase':44} {'calls':>7} {'input tok':>11} {'output tok':>11} {'cost USD':>9}"]
    for plan in plans:
        cost = plan.config.cost(plan.input_tokens, plan.output_tokens)
        lines.append(f"{plan.phase:44} {plan.calls:>7} {plan.input_tokens:>11} {plan.output_tokens:>11} "
                     f"{'-' if cost is None else f'{cost:.4f}':>9}")
    costs = [p.config.cost(p.input_tokens, p.output_tokens) for p in plans]
    total_cost = "-" if all(c is None for c in costs) else f"{sum(c or 0 for c in costs):.4f}"
    lines.append(f"{'total (upper bound: nothing fails)':44} {sum(p.calls for p in plans):>7} "
                 f"{sum(p.input_tokens for p in plans):>11} {sum(p.output_tokens for p in plans):>11} {total_cost:>9}")
    if reasoning := sum(p.reasoning_tokens for p in plans):
        lines.append(f"reasoning: {reasoning} of the output tokens are estimated reasoning "
                     f"({REASONING_SHARE_OF_MAX_TOKENS:.0%} of max_tokens per call of a reasoning: true LLM)")
    cached, inputs = sum(p.cached_input_tokens for p in plans), sum(p.input_tokens for p in plans)
    if cached:
        cached_costs = [p.config.cost(p.input_tokens, p.output_tokens, p.cached_input_tokens) for p in plans]
        priced = "" if all(c is None for c in cached_costs) else \
            f"; cost at the cached input price: {sum(c or 0 for c in cached_costs):.4f} USD"
        lines.append(f"prompt cache: about {cached} of the {inputs} input tokens repeat the method prefix "
                     f"({cached / max(1, inputs):.0%}), a cache hit where the endpoint caches prompts{priced}")
    return "\n".join(lines)
