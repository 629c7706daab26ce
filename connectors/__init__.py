"""Where documents come from: ``files`` (paths and API uploads) and ``website`` (crawls), behind the
``Connector`` seam in ``base``. ``documents`` parses one file's bytes, ``net`` is the SSRF-safe HTTP the
crawler uses, ``robots`` and ``sitemaps`` read what a site says about itself."""
