"""`python -m faceanything.train`: see `faceanything.train.loop`."""

from faceanything.train.loop import main

raise SystemExit(main())
