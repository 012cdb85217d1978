"""Analyses beyond single-layer removal: heads, retrieval heads, redundancy, fast vs slow thinking,
transfer across numbers, and localising a fine-tune's change (weight deltas, delta replacement)."""
