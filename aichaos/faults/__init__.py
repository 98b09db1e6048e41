"""Faults: each is applied at the start of its phase and reverted at its end, or on any exit."""
