"""chamlab.chamnet: search spaces, predictors and (later) the search engine."""
