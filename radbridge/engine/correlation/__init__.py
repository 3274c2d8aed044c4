"""Order-study correlation: gather the facts, let the rules decide (mappings.correlation),
record links and the reconciliation queue, and try again when an order arrives."""
