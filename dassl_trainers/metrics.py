"""The one metric the base-to-new protocol adds."""


def harmonic_mean(base, new):
    """H = 2 * base * new / (base + new) (CoCoOp, CLIPood Table 3); 0 when both are 0."""
    return 2 * base * new / (base + new) if base + new else 0.0
