"""`python -m faceanything.evaluate`: see `faceanything.evaluate.protocol`."""

from faceanything.evaluate.protocol import main

raise SystemExit(main())
