"""The command line: ``run`` (``main``) and ``analyze``, argument types, exit codes."""
