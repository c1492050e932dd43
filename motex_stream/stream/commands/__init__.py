"""The stream's commands: ``serve``, ``replay``, ``demo`` and ``watch``, and ``runner``, which
assembles the service they run."""
