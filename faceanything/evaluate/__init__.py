"""Evaluation on held-out shards (paper 4.2-4.3, tables 1-4): `python -m faceanything.evaluate`."""
