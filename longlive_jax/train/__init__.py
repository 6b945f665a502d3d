"""Training objectives (DMD, critic flow matching, ODE regression) as pure, jittable functions.

See :mod:`longlive_jax.train.losses`; the flow-matching grid and conversions live in
:mod:`longlive_jax.schedule`.
"""
