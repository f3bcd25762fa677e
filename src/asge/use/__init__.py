"""Using a trained run: ``asge.load``, ``asge predict``, ``asge export``, ``asge eval``. Never imports training."""
