"""`sparkling train`: train the bundled GPT and widen it with a `Grower` as a schedule specifies.

The modules follow one run, in this order:

    plan      the schedule and the flags, resolved to a `Plan`
    data      training text, byte tokens, batches
    lr        the base learning-rate schedule
    loop      the training loop
    flops     the training-compute estimate
    metrics   run records and `metrics.json`
    plot      `loss.png`
    console   the printed output
    counts    counts with singular or plural nouns, for printed text
    cli       the `train` subcommand

The user guide is docs/train.md.
"""
