"""The journal (versioned JSON record of a run) and the formatters and writers that present it."""
