"""`python -m faceanything.train` (also under torchrun): see `faceanything.train.cli`."""

from faceanything.train.cli import main

raise SystemExit(main())
