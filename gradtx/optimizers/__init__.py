"""The named optimizers, by family. Each is only a chain of primitives: no new math lives here.

Argument names, order and defaults follow optax wherever optax has the same optimizer,
so ``gradtx.X(**kw)`` and ``optax.X(**kw)`` are interchangeable and give the same numbers.
In the formulas ``g`` is the gradient, ``t`` the step (from 1) and ``lr`` the learning rate.

- ``sgd``: SGD, heavy-ball and Nesterov momentum, averaged momentum;
- ``adaptive``: Adagrad, RMSprop, Adadelta (per-coordinate step sizes);
- ``adam``: the Adam family (Adam, AdamW, NAdam, AMSGrad, Adamax);
- ``sign``: sign methods (Lion).
"""
