"""Pure functions that look inside a trained head: traces, similarity, clustering, figures."""
