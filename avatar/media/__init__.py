"""Media in and out: decoding audio and writing MP4 with PyAV (``codec``), and preparing the reference portrait
(``portrait``: crop, m0, appearance volume, on-disk cache)."""
