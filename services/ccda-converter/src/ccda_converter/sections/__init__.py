"""One module per CCD section; each exposes ``SPEC`` and ``build(ctx) -> lxml section element``."""
