"""Analysis over runs: ``asge report`` (tables, plots, HTML) and ``asge ablate`` (a grid of settings)."""
