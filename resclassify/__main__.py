"""`python -m resclassify`, the same as the resclassify command."""

from .cli import main

if __name__ == "__main__":
    main()
