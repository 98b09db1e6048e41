"""The sample AI stack that aichaos ships to demonstrate and test itself (see stack.yaml)."""
