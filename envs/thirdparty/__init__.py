"""Small wrappers for other people's envs, named under ``env.wrappers`` (one file per env)."""
