"""Sampling a motion latent (paper §3.3): the flow-matching Euler sampler (``sampler``) and the classifier-free
guidance branches over the two audio streams and the anchor (``cfg``)."""
