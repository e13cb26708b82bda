"""Weight files: reading them as tensors only (``reader``) and fetching the official ones (``download``)."""
