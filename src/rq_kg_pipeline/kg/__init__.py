"""Knowledge-graph input: reading and validating TSV triples, vocabularies, the training graph."""
