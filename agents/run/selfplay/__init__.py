"""Self-play for two-player turn-based games (issue 31): the learner against a league of its past selves.

``league.py`` holds the league (snapshots as ordinary checkpoints, fixed opponents, the opponent draw, Elo
ratings, its state saved with every checkpoint; the session hands it each step's infos); ``opponents.py``
plays a checkpoint in the other seat; ``plumbing.py`` is what the training loop and ``evaluate.py`` call. The
game side (one seat of a PettingZoo AEC game as a Gymnasium env, scripted opponents) is envs/selfplay.py.
"""
