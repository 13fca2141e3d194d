"""Capture and score: CIPA matching, the per-object accumulators (VPS, soft labels, label audit, prototypes),
shape scores from masks, in-loop capture helpers; all on tensors, no framework.
"""
