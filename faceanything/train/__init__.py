"""Training (paper 3.2, 4.1): the losses (eqs. 3-6), the loop with its held-out checks, and
`python -m faceanything.train`."""
