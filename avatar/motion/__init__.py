"""DyStream's motion generator (paper Fig. 2, §3.2–3.3): the two audio encoders and their fusion (``audio``), the
autoregressive transformer (``generator``), the flow-matching head (``flow_head``), their sizes (``config``) and
the official checkpoint's weights (``checkpoints``)."""
