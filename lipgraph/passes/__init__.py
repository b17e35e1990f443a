"""Analysis passes over an annotated graph: AutoLip, chains/SeqLip, lower bounds."""
