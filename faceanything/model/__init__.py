"""The network (paper 3.1, eq. 1): Depth Anything 3 with a canonical DPT head, and running it
over a sequence of frames (used by both inference and evaluation)."""
