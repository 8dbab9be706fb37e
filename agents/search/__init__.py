"""Hyperparameter search (``train.py --optimize``): an Optuna study whose trials are ordinary run dirs.

``study.py`` plans, runs and resumes a study; ``trial.py`` runs one trial's seeds as ``train.py`` processes
(``child.py``) and reports their evaluations to the pruner; ``spaces.py`` turns the typed spaces of
:mod:`agents.config.search` into Optuna's; ``report.py`` writes ``best.yaml`` and the table of trials;
``onray.py`` runs the trials as Ray tasks on a cluster (``--ray-address``, or ``--backend rllib``).
"""
