"""Click commands, one module per tool; shared by ``scripts/*.py`` and the ``styleforge`` command."""
