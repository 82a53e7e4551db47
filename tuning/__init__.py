"""``zodd tune``: Ray Tune sweeps over zodd distill settings (the CVaR alpha, the cluster count
and the real batch size by default), scored on a validation split carved from the training data.

* ``space``: the ``NAME=VALUES`` grammar and its Ray Tune form;
* ``trial``: the validation split and the trainable (distil, score, report, checkpoint);
* ``sweep``: set-up, resume, the results table, best config, plot and the final test.
"""
