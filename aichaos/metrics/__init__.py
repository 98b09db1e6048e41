"""Samples, windows, SLOs and analysis: pure functions over per-second buckets."""
