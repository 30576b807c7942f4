"""edgec passes: one module per pass."""
