"""An anytime-valid paired test: is a candidate better than the incumbent on the items where they differ?

Two methods scored on the same dev item either agree (both pass, both fail: no evidence) or
differ: a *win* (the incumbent failed, the candidate passed) or a *loss*. If the candidate is
not better, a win is at most as likely as a loss: p = P(win | the item is discordant) <= 1/2.

The evidence for "better" is a mixture likelihood ratio: the likelihood of the wins and losses
under p drawn uniformly from (1/2, 1], divided by their likelihood under p = 1/2. For every
p <= 1/2 this is a nonnegative supermartingale in the number of discordant items, so by Ville's
inequality the chance that it EVER reaches 1/alpha, however often it is looked at, is at most
alpha. Adopting when it reaches 1/(1 - confidence) therefore adopts a method that is not better
with probability at most 1 - confidence, with no penalty for looking after every item.

For integer counts the mixture has an exact form: with n = wins + losses,
    integral_a^b p^w (1-p)^l dp = B(w+1, l+1) * [P(Bin(n+1, a) <= w) - P(Bin(n+1, b) <= w)],
so the ratio needs only binomial tail sums (no special functions).
"""

from __future__ import annotations

import math


def _log_binomial_cdf(k: int, n: int, p: float) -> float:
    """log P(Bin(n, p) <= k), summed in log space so large n does not underflow."""
    if k < 0:
        return -math.inf
    if k >= n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return -math.inf
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
             for i in range(k + 1)]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


def mixture_ratio(wins: int, losses: int, low: float, high: float, null: float) -> float:
    """The likelihood of (wins, losses) under p ~ Uniform(low, high) over that under p = null."""
    n = wins + losses
    log_beta = math.lgamma(wins + 1) + math.lgamma(losses + 1) - math.lgamma(n + 2)
    upper, lower = _log_binomial_cdf(wins, n + 1, low), _log_binomial_cdf(wins, n + 1, high)
    if lower == -math.inf:
        log_mass = upper
    else:
        log_mass = upper + math.log1p(-math.exp(min(0.0, lower - upper))) if upper > lower else -math.inf
    if log_mass == -math.inf:
        return 0.0
    log_null = (wins * math.log(null) if wins else 0.0) + (losses * math.log1p(-null) if losses else 0.0)
    return math.exp(log_beta + log_mass - math.log(high - low) - log_null)


PRIOR_HIGH = 1.0
"""The mixture spreads p uniformly over (1/2, PRIOR_HIGH]: any range above 1/2 keeps the test valid;
a narrower one gathers evidence faster for the modest leads that revisions of one method have."""


def evidence_better(wins: int, losses: int) -> float:
    """Evidence that the candidate is better (p > 1/2); valid against every p <= 1/2."""
    return mixture_ratio(wins, losses, 0.5, PRIOR_HIGH, 0.5)


def evidence_not_better(wins: int, losses: int, margin: float = 0.0) -> float:
    """Evidence that the candidate's win share is below 1/2 + margin; valid against every p >= 1/2 + margin.

    Dropping on it never adopts anything, so its level only decides how many good candidates
    are dropped early, never how often a worse one is adopted.
    """
    edge = 0.5 + margin
    return mixture_ratio(wins, losses, 0.0, edge, edge)


def threshold(confidence: float) -> float:
    """The evidence needed at this confidence: 1 / (1 - confidence) (10 at 0.9)."""
    return 1.0 / (1.0 - confidence)


def spent_alpha(alpha: float, information: float) -> float:
    """The share of alpha a test may have spent by this information fraction (items scored / pool).

    The power family alpha * t^2 (Kim and DeMets): little is spent on the first items, where a
    lead is mostly luck, so a candidate that needs the whole pool loses almost no power to the
    looks before it.
    """
    return alpha * min(1.0, max(0.0, information)) ** 2


class SpendingSignTest:
    """An exact alpha-spending sign test of "the candidate is better", looked at after every dev item.

    Under the null (a win at most as likely as a loss among discordant items) the signs of the
    discordant items are fair coin flips at worst, whatever the items' order. After each item the
    test rejects when the wins reach the smallest count whose chance, on the paths not rejected at
    an earlier look, keeps the total rejected mass within spent_alpha(alpha, items / pool). The
    mass is computed exactly (a distribution over the win count), so the chance of ever rejecting
    a candidate that is not better is at most alpha, however many looks, and a stop for any other
    reason (shown worse, out after a round) only lowers it.
    """

    def __init__(self, alpha: float, pool: int):
        self.alpha, self.pool = alpha, max(1, pool)
        self.items = self.wins = self.discordant = 0
        self.spent = 0.0
        self.paths = [1.0]
        """Under a fair coin: the chance of each win count over the discordant items so far, on paths not yet rejected."""
        self.rejected = False

    def add(self, incumbent_failed: bool, candidate_failed: bool) -> bool:
        """Score one more item; True once the test has rejected (the candidate is shown better)."""
        self.items += 1
        if incumbent_failed != candidate_failed:
            self.discordant += 1
            self.wins += incumbent_failed
            half = [p / 2 for p in self.paths]
            self.paths = [a + b for a, b in zip(half + [0.0], [0.0] + half)]
        budget = spent_alpha(self.alpha, self.items / self.pool) - self.spent
        critical, tail = len(self.paths), 0.0
        while critical > 0 and tail + self.paths[critical - 1] <= budget * (1 + 1e-12):
            critical -= 1
            tail += self.paths[critical]
        self.spent += tail
        self.paths[critical:] = [0.0] * (len(self.paths) - critical)
        if self.discordant and self.wins >= critical:
            self.rejected = True
        return self.rejected


def can_still_reject(alpha: float, wins: int, discordant: int, wins_left: int) -> bool:
    """Whether a SpendingSignTest could still reject, with `wins_left` items left on which the candidate could win.

    At any look the rejected wins have a fair-coin tail of at most alpha: that tail, less the paths
    rejected earlier (at most the alpha spent before), fits the budget. The smallest tail the
    candidate can reach is by winning every item left and losing none, so if even that tail
    exceeds alpha no look can reject. Exact, not a heuristic: stopping on it changes no decision.
    """
    n, w = discordant + wins_left, wins + wins_left
    return w > 0 and -math.expm1(_log_binomial_cdf(w - 1, n, 0.5)) <= alpha * (1 + 1e-12)
