"""FLAME: the model container (`model`), safe loading of a user's licensed files (`loading`),
the LBS layer in torch (`lbs`), the embedded sample head model (`sample_model`), and the
multi-view tracker (`settings`, `observations`, `energies`, `initialisation`, `subset`,
`optimisation`, `fitting`, `tracker`).

The sample head model stays here, beside FLAME's structure, not in `tasks/sample/`: it is the
head the tracker falls back to without FLAME and the model the LBS tests run on, and
flame_tracking imports nothing from tasks.
"""
