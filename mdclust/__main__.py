"""`python -m mdclust`, the same as the `mdclust` command."""

from mdclust.cli import main

if __name__ == "__main__":
    main()
