"""`python -m faceanything.predict`: see `faceanything.predict.run`."""

from faceanything.predict.run import main

raise SystemExit(main())
