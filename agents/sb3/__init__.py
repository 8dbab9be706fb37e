"""The stable-baselines3 backend (``backend``) and the vector envs only it uses (``vecenv``)."""
