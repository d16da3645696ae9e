"""Repository-root conftest: puts the repository on sys.path (the program imports `core`, `components`)."""
