"""Pairwise preference data for judges: the JSONL record format, verifier labels and a generator."""

from arbiter.data.schema import PairDataError, PreferencePair, read_pairs, write_pairs

__all__ = ["PairDataError", "PreferencePair", "read_pairs", "write_pairs"]
