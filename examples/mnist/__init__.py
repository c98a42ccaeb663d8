"""MNIST with Flax NNX and gradtx: the classic optimizers compared on one network.

    python -m examples.mnist --optimizers sgd,momentum,nesterov,rmsprop,adagrad,adadelta,adam --epochs 5

Modules: ``data`` (TFDS or IDX files, the deterministic split), ``models`` (MLP, CNN),
``train`` (the jitted step and ``lax.scan`` epoch, evaluation), ``checkpoints`` (a
checkpoint each epoch, ``--resume``, SIGTERM), ``report`` (table, CSV, plot), ``__main__``
(the command line).
"""
