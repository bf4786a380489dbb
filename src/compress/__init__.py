"""Ways to shrink a site's units, one module per method: each a callable over a
:class:`~src.compress.base.LayerPair` (the units' incoming weights and what reads them), built from
its config's ``_target_``, whatever the site."""
