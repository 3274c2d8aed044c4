"""Clinical QA: agreement with radiologists, subgroup strata, score and input drift."""
