"""The built-in adapters, one file each: robot (MuJoCo), game (ALE), renderer (Pillow), seismic (NumPy)."""
