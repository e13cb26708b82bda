"""Media in and out: decoding audio and writing MP4 with PyAV (``codec``), and preparing the reference portrait
(``portrait``: m0 and the appearance volume, from ``image`` (reading it), ``face_crop`` (the official crop) and
``portrait_cache`` (the on-disk cache))."""
