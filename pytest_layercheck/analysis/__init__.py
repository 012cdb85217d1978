"""Analyses beyond single-layer removal: heads, retrieval heads, redundancy, fast vs slow thinking,
transfer across numbers, and localising a fine-tune's change (weight deltas, delta replacement, the
model comparison).

Each analysis is one room, a package here holding its computation, result, renderers, subcommand and
registration; :mod:`.registry` lists the rooms and is what the front ends read.
"""
