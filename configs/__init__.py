"""configs — filled in by later issues."""
