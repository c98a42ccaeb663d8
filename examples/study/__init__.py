"""The optimizer tutorials' study, redone on MNIST with gradtx sweeps and diagnostics.

    python -m examples.study            # the full study: report, figures, CSV, JSON in results/study/
    python -m examples.study --quick    # the same grids for 3 epochs on 2,000 images

Each grid is one ``gradtx.sweep`` trained as one compiled program (the MNIST example's
model vmapped over the settings, a ``lax.scan`` over each epoch's steps) with
``gradtx.training_diagnostics`` recorded per step.

Modules: ``training`` (the compiled epoch of a sweep, per-step diagnostics, the timing of
the same settings one after another), ``study`` (the grids, in the report's order),
``ewa`` (the exponentially weighted average figure), ``report`` (figures, the Markdown
report with its findings, CSV, JSON), ``__main__`` (the command line).
"""
