"""Test configuration: Hypothesis profile from $HYPOTHESIS_PROFILE (ci by default)."""

from tinygrad_seq.testing import load_profile

load_profile("ci")
