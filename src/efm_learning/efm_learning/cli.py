"""The ``efm`` command line (placeholder until the learning core lands: issue 4).

``efm demo`` currently runs the foundation's math on one synthetic episode, printing each
quantity of Algorithm 1: tokenized actions (Appendix E), steps-to-go d (Eq. 1), rewards
(Eq. 2), Monte-Carlo returns and the success detector (Eq. 3).
"""

from __future__ import annotations

import argparse

import numpy as np

from efm_learning.returns import PAPER_GAMMA, discounted_returns, reinforce_constant
from efm_learning.reward import rewards_from_steps_to_go
from efm_learning.steps_to_go import language_table_steps_to_go
from efm_learning.success_detector import SuccessDetector
from efm_learning.tokenizers import LanguageTableActionTokenizer


def demo() -> None:
    """Label one synthetic 6-step episode the way a Stage 2 actor does."""
    rng = np.random.default_rng(0)
    actions = rng.uniform(-0.05, 0.05, size=(6, 2))
    tokens = LanguageTableActionTokenizer(max_delta=0.05).encode(actions)
    steps = language_table_steps_to_go()
    true_remaining = np.array([12, 9, 10, 6, 3, 1, 0])
    probs = np.eye(steps.num_bins)[steps.encode(true_remaining)]
    d = steps.expected_steps(probs)
    rewards = rewards_from_steps_to_go(d)
    returns = discounted_returns(rewards, PAPER_GAMMA)
    success = SuccessDetector(threshold=2.0)(d)
    print("efm demo: foundation only (the practice loop arrives with issues 4-6)")
    print(f"action tokens (sign, mag, sign, mag):\n{tokens}")
    print(f"d(o_t, g):       {np.round(d, 2)}")
    print(f"rewards r_t:     {np.round(rewards, 2)}")
    print(f"returns R_t:     {np.round(returns, 2)} (gamma={PAPER_GAMMA})")
    print(f"success d <= s:  {success.astype(int)}")
    print(f"REINFORCE c:     {reinforce_constant():.3f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="efm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the largest end-to-end job available")
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo()


if __name__ == "__main__":
    main()
