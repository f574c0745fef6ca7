"""hardware — filled in by later issues."""
