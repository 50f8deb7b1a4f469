"""The ``slidesift`` command line: one module per command; rich output lives only here."""
