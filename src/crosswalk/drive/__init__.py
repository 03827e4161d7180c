"""crosswalk: this part is being built."""
